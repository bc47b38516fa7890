#!/usr/bin/env python
"""``fairseq-hydra-train`` with this plugin imported first.

    python scripts/hydra_train.py --config-dir configs/cpu/RTE --config-name stage1 \\
        task.data=... checkpoint.save_dir=... distributed_training.distributed_world_size=2

The code is fairseq_crild/cli/hydra_train.py (installed command: ``crild-hydra-train``).
"""

import sys

from fairseq_crild.cli.hydra_train import main

if __name__ == "__main__":
    sys.exit(main())
