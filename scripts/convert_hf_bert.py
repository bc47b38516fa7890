#!/usr/bin/env python
"""Convert a Hugging Face BERT folder into a fairseq checkpoint of the ``bert`` model.

The code is fairseq_crild/cli/convert.py (installed command: ``crild-convert``).
"""

import sys

from fairseq_crild.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
