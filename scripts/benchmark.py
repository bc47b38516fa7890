#!/usr/bin/env python
"""Speed and memory of the distillation steps on real GLUE batches, in one process.

The code is fairseq_crild/cli/benchmark.py (installed command: ``crild-benchmark``).
"""

import sys

from fairseq_crild.cli.benchmark import VARIANTS, console_main, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(console_main())
