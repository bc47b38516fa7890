#!/usr/bin/env python
"""BPE-encode and binarise a GLUE task for RoBERTa teachers/students (fairseq's recipe).

The code is fairseq_crild/cli/prepare_roberta.py (installed command: ``crild-prepare-roberta``).
"""

import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # import-time notices, not ours

from fairseq_crild.cli.prepare_roberta import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
