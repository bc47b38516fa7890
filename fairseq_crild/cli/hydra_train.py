"""``fairseq-hydra-train`` with this plugin imported first.

    crild-hydra-train --config-dir configs/cpu/RTE --config-name stage1 \\
        task.data=... checkpoint.save_dir=... distributed_training.distributed_world_size=2

fairseq-hydra-train imports ``common.user_dir`` only inside the training function, after its
launcher has run, so the plugin's CPU distributed fixes (gloo, CPU DDP, the spawn of
``distributed_world_size`` processes; see fairseq_crild/patches/distributed.py) come too late
for it. Importing the plugin before fairseq's own entry point applies them; everything else is
fairseq-hydra-train unchanged (same arguments, same overrides). One addition: when no
``common.user_dir=`` override is given and the current directory has no ``fairseq_crild``
folder (so a config's relative ``common.user_dir: fairseq_crild`` would not resolve),
``common.user_dir=<this package's folder>`` is added.
"""

import os
import sys
from typing import Optional, Sequence

import fairseq_crild  # noqa: F401  (installs the distributed fixes)
from fairseq_crild.locations import RELATIVE_USER_DIR, user_dir


def with_user_dir(argv: Sequence[str], cwd: str) -> list:
    """``argv`` plus ``common.user_dir=<absolute>`` where the relative one would not resolve."""
    argv = list(argv)
    if any(a.startswith(("common.user_dir=", "+common.user_dir=")) for a in argv):
        return argv
    if os.path.isdir(os.path.join(cwd, RELATIVE_USER_DIR)):
        return argv
    return argv + [f"common.user_dir={user_dir()}"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from fairseq_cli.hydra_train import cli_main

    args = sys.argv[1:] if argv is None else argv
    sys.argv = [sys.argv[0]] + with_user_dir(args, os.getcwd())
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
