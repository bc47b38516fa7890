"""Checkpoint copies that a kill cannot leave half-written.

fairseq writes the first checkpoint of a save atomically (``torch.save`` to ``NAME.tmp``,
then ``os.rename``), but then *copies* it to the other names of the same save
(``checkpoint_last.pt`` after ``checkpoint_3_400.pt`` with ``--save-interval-updates``, or
after ``checkpoint3.pt`` at an epoch end) with ``shutil.copyfile``, which truncates the good
``checkpoint_last.pt`` and rewrites it in place. A SIGKILL during that copy leaves a truncated
``checkpoint_last.pt``, and the rerun cannot resume. :func:`install` makes local copies
atomic: copy to a temporary sibling, flush and fsync, then ``os.replace`` over the target.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Any, Callable


def atomic_copy(src_path: str, dst_path: str) -> None:
    """Copies ``src_path`` to ``dst_path``; the target is either the old file or the whole
    new one, never a prefix."""
    tmp = f"{dst_path}.copying"
    try:
        with open(src_path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, dst_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    folder = os.open(os.path.dirname(os.path.abspath(dst_path)), os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(folder)
    finally:
        os.close(folder)


def _copy(original: Callable[..., Any], src_path: str, dst_path: str,
          overwrite: bool = False) -> Any:
    from fairseq.file_io import PathManager

    if PathManager.path_requires_pathmanager(src_path) or \
            PathManager.path_requires_pathmanager(dst_path):
        return original(src_path, dst_path, overwrite=overwrite)
    atomic_copy(src_path, dst_path)  # fairseq's local fallback overwrites too
    return True


def install() -> None:
    """Routes fairseq's local ``PathManager.copy`` through :func:`atomic_copy` (idempotent)."""
    from fairseq.file_io import PathManager

    current = PathManager.copy
    if getattr(current, "_crild_patched", False):
        return
    patched = functools.wraps(current)(functools.partial(_copy, current))
    patched._crild_patched = True  # type: ignore[attr-defined]
    PathManager.copy = staticmethod(patched)  # type: ignore[method-assign]
