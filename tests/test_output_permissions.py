"""Result folders get ordinary permissions, whatever their writers create (safetensors
writes 0600 files): an exported model folder must be readable like any other output."""

import os
import stat

import torch
from safetensors.torch import save_file

from fairseq_crild.outputs import atomic_output_dir


def test_files_in_an_output_folder_get_the_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        out = tmp_path / "hf"
        with atomic_output_dir(str(out)) as tmp:
            save_file({"w": torch.ones(2)}, os.path.join(tmp, "model.safetensors"))
            os.makedirs(os.path.join(tmp, "sub"))
            fd = os.open(os.path.join(tmp, "sub", "private.txt"), os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
                 for p in out.rglob("*")}
    finally:
        os.umask(umask)
    assert modes == {"model.safetensors": 0o644, "sub": 0o755, "sub/private.txt": 0o644}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
