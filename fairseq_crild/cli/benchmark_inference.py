"""CPU inference benchmark of a teacher and a student on real dev examples (as in report.md).

``crild-benchmark-inference`` is the installed command; ``python
scripts/benchmark_inference.py`` runs the same ``main`` from a source checkout.

    crild-benchmark-inference DATA_BIN --teacher T.pt --student S.pt [--threads 1]

Prints the JSON the pipeline stores under ``inference`` in report.json: batch-1 latency
(median and p90 ms over single dev examples) and batch-32 throughput (examples/s) of each
model, their ratios, and the CPU thread count they were measured with.
"""

import argparse
import json
import sys

import torch

from fairseq_crild.pipeline.report import inference_speed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="prepare_glue.py folder (its valid split is used)")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: "
                   "torch's choice)")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--examples", type=int, default=64, help="examples for throughput")
    p.add_argument("--latency-examples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    inf = inference_speed(args.data, {"teacher": args.teacher, "student": args.student},
                          args.max_len, n=args.examples, repeats=args.repeats,
                          batch_size=args.batch_size, latency_examples=args.latency_examples)
    print(json.dumps(inf, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
