#!/usr/bin/env python
"""Tokenise and binarise a GLUE task for ``--task distill_glue``.

    python scripts/prepare_glue.py --glue-dir GLUE --task RTE --dict ckpt/minilm/dict.txt \\
        --out data-bin/RTE [--lowercase | --no-lowercase] [--workers N] [--overwrite]

Tasks: CoLA, SST-2, MRPC, STS-B, QQP, MNLI (valid = dev_matched, valid_mm = dev_mismatched),
QNLI, RTE, WNLI, AX (diagnostic, test only), and PAIRS (unlabelled sentence pairs in
GLUE_DIR/train.tsv with a sentence1[/sentence2] header, for supplementary ILD data).
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.data.glue_binarize import prepare_task  # noqa: E402
from fairseq_crild.data.glue_formats import GlueFormatError  # noqa: E402
from fairseq_crild.outputs import OutputExistsError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", required=True, help="folder holding the task folders")
    parser.add_argument("--task", required=True, help="GLUE task name (case-insensitive)")
    parser.add_argument("--dict", required=True, help="dict.txt written by convert_hf_bert.py")
    parser.add_argument("--out", required=True, help="output folder (data-bin/TASK)")
    parser.add_argument("--lowercase", default=None, action=argparse.BooleanOptionalAction,
                        help="lower-case text (default: as tokenizer_config.json next to "
                        "--dict says, else yes)")
    parser.add_argument("--workers", type=int, default=None,
                        help="tokenizer threads (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    try:
        meta = prepare_task(args.glue_dir, args.task, args.dict, args.out, args.lowercase,
                            args.overwrite, args.workers)
    except (GlueFormatError, OutputExistsError, FileNotFoundError) as err:
        print(f"prepare_glue: error: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    print(f"wrote {args.out}: {meta['task']} ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
