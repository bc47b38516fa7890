#!/usr/bin/env python
"""The whole recipe for one GLUE task and method, ending with a report.

The code is fairseq_crild/cli/pipeline.py (installed command: ``crild-pipeline``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.cli.pipeline import main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
