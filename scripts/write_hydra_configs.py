#!/usr/bin/env python
"""Writes configs/ (fairseq-hydra-train configs for every GLUE task, stage and budget) from the
pipeline's recipe, or checks that the committed ones are current.

    python scripts/write_hydra_configs.py [--out configs] [--check] [--only cpu/RTE paper/CoLA ...]
"""

import argparse
import logging
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "configs"))
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if any file differs from what would be written")
    p.add_argument("--only", nargs="+", default=[""],
                   help="only configs whose path starts with one of these")
    args = p.parse_args(argv)
    args.out = os.path.abspath(args.out)  # before the chdir below
    warnings.filterwarnings("ignore")
    logging.disable(logging.ERROR)  # hydra's compose API is chatty
    os.chdir(ROOT)  # --user-dir fairseq_crild is relative to the repository
    from fairseq_crild.pipeline.hydra_configs import render_all

    stale = []
    for rel, text in sorted(render_all(tuple(args.only)).items()):
        path = os.path.join(args.out, rel)
        current = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    verb = "differ from the recipe (run scripts/write_hydra_configs.py)" if args.check \
        else "written"
    print(f"{len(stale)} config(s) {verb}" + "".join(f"\n  {s}" for s in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
