#!/usr/bin/env python
"""Export a distilled student to a Hugging Face classifier folder (parity checked).

The code is fairseq_crild/cli/export_hf.py (installed command: ``crild-export-hf``).
"""

import sys

from fairseq_crild.cli.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
