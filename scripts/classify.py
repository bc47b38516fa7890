#!/usr/bin/env python
"""Classify sentences or sentence pairs with a trained checkpoint.

The code is fairseq_crild/cli/classify.py (installed command: ``crild-classify``).
"""

import sys

from fairseq_crild.cli.classify import main

if __name__ == "__main__":
    sys.exit(main())
