#!/usr/bin/env python
"""CPU inference benchmark of a teacher and a student on real dev examples (as in report.md).

The code is fairseq_crild/cli/benchmark_inference.py (installed command:
``crild-benchmark-inference``).
"""

import sys

from fairseq_crild.cli.benchmark_inference import main

if __name__ == "__main__":
    sys.exit(main())
