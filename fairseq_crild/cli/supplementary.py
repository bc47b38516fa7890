"""Writes a supplementary-text folder (PAIRS layout) from other GLUE tasks, for
``crild-pipeline --ild-data`` / ``--kd-data``:

    crild-supplementary --glue-dir ../shared/data/glue --from RTE,RTE:test --target STS-B \\
        --out data/supp/RTE-pairs
    crild-supplementary --glue-dir ../shared/data/glue --from STS-B,RTE --single \\
        --target CoLA --out data/supp/sentences     # single sentences, for CoLA
"""

import argparse
import os
import sys

from fairseq_crild.data.supplementary import parse_sources, supplementary_rows, tsv_text
from fairseq_crild.errors import CrildError
from fairseq_crild.outputs import atomic_output_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--from", dest="sources", required=True, metavar="TASK[:SPLIT],...",
                   help="GLUE tasks whose text to use (split train unless :SPLIT is given; "
                   "test splits need no labels), e.g. RTE,RTE:test")
    p.add_argument("--target", default="",
                   help="the task the text is for: its own splits are refused (leakage)")
    p.add_argument("--single", action="store_true",
                   help="each sentence on its own row (header sentence1 only), for "
                   "single-sentence tasks such as CoLA")
    p.add_argument("--out", required=True, help="the folder to write (train.tsv); refused "
                   "if it exists and is not empty, unless --overwrite")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        rows = supplementary_rows(args.glue_dir, parse_sources(args.sources), args.single,
                                  args.target)
        if not rows:
            raise ValueError(f"--from {args.sources}: no text read")
        text = tsv_text(rows)
        with atomic_output_dir(args.out, args.overwrite) as tmp:
            with open(os.path.join(tmp, "train.tsv"), "w", encoding="utf-8") as f:
                f.write(text)
    except (CrildError, ValueError, FileNotFoundError, KeyError) as err:
        print(f"crild-supplementary: error: {err}", file=sys.stderr)
        return 1
    kind = "sentences" if args.single else "pairs"
    print(f"wrote {len(rows)} {kind} to {os.path.join(args.out, 'train.tsv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
