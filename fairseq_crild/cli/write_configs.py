"""Writes fairseq-hydra-train configs for every GLUE task, stage and budget from the
pipeline's recipe, or checks that written ones are current.

    crild-write-configs [--out configs] [--user-dir PATH] [--check] [--only cpu/RTE ...]

``crild-write-configs`` is the installed command: it writes ``--out`` (default ``configs`` in
the current directory) with ``common.user_dir`` set to this package's absolute folder, so the
configs run from any directory. ``python scripts/write_hydra_configs.py`` is the source
checkout's: it writes (or ``--check``s) the committed ``configs/`` with ``common.user_dir:
fairseq_crild``, relative to the checkout's root (run them from there, or override
``common.user_dir=$(python -m fairseq_crild --user-dir)``).
"""

import argparse
import logging
import os
import sys
import warnings
from typing import Optional, Sequence

from fairseq_crild.locations import user_dir


def main(argv: Optional[Sequence[str]] = None, default_out: str = "configs",
         default_user_dir: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=default_out,
                   help="folder to write (or --check); default %(default)s")
    p.add_argument("--user-dir", default=default_user_dir or user_dir(),
                   help="common.user_dir written into every config (default: %(default)s; the "
                   "committed configs/ of the source checkout use fairseq_crild, relative to "
                   "its root)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if any file differs from what would be written")
    p.add_argument("--only", nargs="+", default=[""],
                   help="only configs whose path starts with one of these")
    args = p.parse_args(argv)
    args.out = os.path.abspath(args.out)
    warnings.filterwarnings("ignore")
    logging.disable(logging.ERROR)  # hydra's compose API is chatty
    from fairseq_crild.pipeline.hydra_configs import render_all

    stale = []
    for rel, text in sorted(render_all(tuple(args.only), args.user_dir).items()):
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
