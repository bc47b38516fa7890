#!/usr/bin/env python
"""CPU inference benchmark of a teacher and a student on real dev examples (as in report.md).

The code is fairseq_crild/cli/benchmark_inference.py (installed command:
``crild-benchmark-inference``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.cli.benchmark_inference import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
