#!/usr/bin/env python
"""Mean and std over seeds of the pipeline's report.json files, as a markdown table.

The code is fairseq_crild/cli/summarize.py (installed command: ``crild-summarize``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.cli.summarize import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
