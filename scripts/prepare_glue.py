#!/usr/bin/env python
"""Tokenise and binarise a GLUE task for ``--task distill_glue``.

The code is fairseq_crild/cli/prepare.py (installed command: ``crild-prepare``).
"""

import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # import-time notices, not ours

from fairseq_crild.cli.prepare import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
