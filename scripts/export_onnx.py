#!/usr/bin/env python
"""Export a distilled student's classification head to ONNX, checked with onnxruntime.

The code is fairseq_crild/cli/export_onnx.py (installed command: ``crild-export-onnx``).
"""

import sys

from fairseq_crild.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
