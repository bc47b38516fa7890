#!/usr/bin/env python
"""``fairseq-hydra-train`` with this plugin imported first.

    python scripts/hydra_train.py --config-dir configs/cpu/RTE --config-name stage1 \\
        task.data=... checkpoint.save_dir=... distributed_training.distributed_world_size=2

fairseq-hydra-train imports ``common.user_dir`` only inside the training function, after its
launcher has run, so the plugin's CPU distributed fixes (gloo, CPU DDP, the spawn of
``distributed_world_size`` processes; see fairseq_crild/distributed.py) come too late for it.
Importing the plugin before fairseq's own entry point applies them; everything else is
fairseq-hydra-train unchanged (same arguments, same overrides).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_cli.hydra_train import cli_main  # noqa: E402

import fairseq_crild  # noqa: E402,F401  (installs the distributed fixes)

if __name__ == "__main__":
    cli_main()
