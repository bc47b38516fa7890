#!/usr/bin/env python
"""Convert a Hugging Face BERT folder into a fairseq checkpoint of the ``bert`` model.

The code is fairseq_crild/cli/convert.py (installed command: ``crild-convert``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.cli.convert import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
