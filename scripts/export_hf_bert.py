#!/usr/bin/env python
"""Export a fairseq ``bert`` checkpoint to a Hugging Face folder (parity checked).

The code is fairseq_crild/cli/export_hf_bert.py (installed command: ``crild-export-hf-bert``).
"""

import sys

from fairseq_crild.cli.export_hf_bert import main

if __name__ == "__main__":
    sys.exit(main())
