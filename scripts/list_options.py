#!/usr/bin/env python
"""Every option of the plugin's task, criterions, models and optimizer, with its help.

    python scripts/list_options.py [distill_glue cr_ild kd ...] [--kind criterion]
        [--format text|markdown]

Same as ``python -m fairseq_crild.cli.options_help`` (see there).
"""

import sys

from fairseq_crild.cli.options_help import main

if __name__ == "__main__":
    sys.exit(main())
