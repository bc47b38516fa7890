#!/usr/bin/env python
"""Writes configs/ (fairseq-hydra-train configs for every GLUE task, stage and budget) from the
pipeline's recipe, or checks that the committed ones are current.

    python scripts/write_hydra_configs.py [--out configs] [--check] [--only cpu/RTE paper/CoLA ...]

The code is fairseq_crild/cli/write_configs.py; here the defaults are the checkout's own
configs/ and ``common.user_dir: fairseq_crild`` (``crild-write-configs`` writes ./configs with
the package's absolute folder).
"""

import os
import sys

from fairseq_crild.cli.write_configs import main as _main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    return _main(argv, default_out=os.path.join(ROOT, "configs"),
                 default_user_dir="fairseq_crild")


if __name__ == "__main__":
    sys.exit(main())
