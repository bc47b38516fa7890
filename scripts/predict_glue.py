#!/usr/bin/env python
"""Write a GLUE test-server file from a checkpoint.

The code is fairseq_crild/cli/predict.py (installed command: ``crild-predict``).
"""

import sys

from fairseq_crild.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
