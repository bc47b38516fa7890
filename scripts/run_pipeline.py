#!/usr/bin/env python
"""The whole recipe for one GLUE task and method, ending with a report.

The code is fairseq_crild/cli/pipeline.py (installed command: ``crild-pipeline``).
"""

import sys

from fairseq_crild.cli.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
