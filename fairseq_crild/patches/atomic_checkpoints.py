"""Checkpoint copies that a kill cannot leave half-written.

fairseq writes the first checkpoint of a save atomically (``torch.save`` to ``NAME.tmp``,
then ``os.rename``), but then *copies* it to the other names of the same save
(``checkpoint_last.pt`` after ``checkpoint_3_400.pt`` with ``--save-interval-updates``, or
after ``checkpoint3.pt`` at an epoch end) with ``shutil.copyfile``, which truncates the good
``checkpoint_last.pt`` and rewrites it in place. A SIGKILL during that copy leaves a truncated
``checkpoint_last.pt``, and the rerun cannot resume. :func:`install` makes local copies
atomic: copy to a temporary sibling, flush and fsync, then ``os.replace`` over the target.

A kill during the *first* such copy still leaves no ``checkpoint_last.pt`` at all (only the
intact ``checkpoint_1_5.pt``), and fairseq's ``load_checkpoint`` then starts from zero (or from
``--finetune-from-model`` again). :func:`install` also wraps that function: before fairseq
looks for ``checkpoint_last.pt`` (the default ``--restore-file``), :func:`repair_last_checkpoint`
finishes the interrupted copy: when ``checkpoint_last.pt`` is missing, unreadable or holds
fewer updates than another checkpoint of the save dir (``checkpoint_E_U.pt``,
``checkpointE.pt``, ``checkpoint_best.pt``), the newest intact one is copied into its place,
so the rerun resumes exactly where fairseq would have. An unreadable ``checkpoint_last.pt``
is kept as ``checkpoint_last.pt.unreadable``, never deleted. ``--resume-from last`` (task
option) restores fairseq's own choice.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from typing import Any, Callable, List, Optional, Tuple

logger = logging.getLogger(__name__)
COPY_SUFFIX = ".copying"


def atomic_copy(src_path: str, dst_path: str) -> None:
    """Copies ``src_path`` to ``dst_path``; the target is either the old file or the whole
    new one, never a prefix."""
    tmp = f"{dst_path}{COPY_SUFFIX}"
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


# ------------------------------------------------------------------ resume


def checkpoint_updates(path: str) -> Optional[int]:
    """The update count of an intact training checkpoint, None for a missing, truncated or
    foreign file. Reads only the pickled structure (tensors memory-mapped, not loaded)."""
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not the zip format mmap needs: read it whole
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state.get("model"), dict):
            return None
        if "train_iterator" not in (state.get("extra_state") or {}):
            return None
        return int(state["optimizer_history"][-1]["num_updates"])
    except Exception:  # noqa: BLE001 - any failure to read means: not intact
        return None


def numbered_checkpoints(save_dir: str, suffix: str = "") -> List[str]:
    """The other names fairseq saves under in ``save_dir``: ``checkpoint_E_U{suffix}.pt``,
    ``checkpointE{suffix}.pt``, ``checkpoint_best{suffix}.pt`` and ``checkpoint.best_*.pt``
    (the first name of a save is written whole; ranked by their update counts, so an older
    best checkpoint never wins over a newer last one)."""
    pattern = re.compile(rf"checkpoint(?:_\d+_\d+|\d+|_best|\.best_.+){re.escape(suffix)}\.pt")
    return sorted(os.path.join(save_dir, name) for name in os.listdir(save_dir)
                  if pattern.fullmatch(name))


def _save_order(name: str) -> int:
    """Among names of one save, the earlier fairseq writes it the higher (its first name is
    the one torch.save wrote whole): checkpointE, checkpoint_E_U, checkpoint_best, .best_*."""
    if name.startswith("checkpoint.best_"):
        return 0
    if name.startswith("checkpoint_best"):
        return 1
    return 2 if name.startswith("checkpoint_") else 3


def repair_last_checkpoint(save_dir: str, suffix: str = "") -> Optional[str]:
    """Puts the newest intact numbered checkpoint in place of a missing, unreadable or older
    ``checkpoint_last{suffix}.pt``; returns the checkpoint copied (None: nothing to do)."""
    last = os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
    stale = last + COPY_SUFFIX  # left by a kill inside atomic_copy
    if os.path.exists(stale):
        os.remove(stale)
    last_updates = checkpoint_updates(last) if os.path.exists(last) else None
    found: List[Tuple[int, int, str]] = []
    for path in numbered_checkpoints(save_dir, suffix):
        updates = checkpoint_updates(path)
        if updates is None:
            logger.warning(f"{path} is not an intact checkpoint; not resuming from it")
        else:
            found.append((updates, _save_order(os.path.basename(path)), path))
    if not found:
        return None
    updates, _, newest = max(found)
    if last_updates is not None and last_updates >= updates:
        return None
    if last_updates is None and os.path.exists(last):
        os.replace(last, last + ".unreadable")
        why = f"{last} is unreadable (kept as {os.path.basename(last)}.unreadable)"
    elif last_updates is None:
        why = f"{last} is missing (a kill before or during its first copy)"
    else:
        why = f"{last} holds {last_updates} updates (a kill before or during its copy)"
    atomic_copy(newest, last)
    logger.warning(f"{why}: resuming from the newest intact checkpoint {newest} "
                   f"({updates} updates), copied to {os.path.basename(last)}")
    return newest


def _resume_mode(trainer: Any) -> str:
    return str(getattr(getattr(getattr(trainer, "task", None), "cfg", None), "resume_from",
                       "newest-intact"))


def _load_checkpoint(original: Callable[..., Any], cfg: Any, trainer: Any,
                     **passthrough_args: Any) -> Any:
    from fairseq.file_io import PathManager

    save_dir = str(getattr(cfg, "save_dir", "") or "")
    wanted = (getattr(cfg, "restore_file", None) == "checkpoint_last.pt"
              and not getattr(cfg, "no_last_checkpoints", False)
              and _resume_mode(trainer) != "last"
              and save_dir and not PathManager.path_requires_pathmanager(save_dir))
    if wanted:
        if getattr(trainer, "data_parallel_rank", 0) == 0 and os.path.isdir(save_dir):
            repair_last_checkpoint(save_dir, getattr(trainer, "checkpoint_suffix", "") or "")
        _barrier()  # every rank then finds the same checkpoint_last.pt
    return original(cfg, trainer, **passthrough_args)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def install() -> None:
    """Routes fairseq's local ``PathManager.copy`` through :func:`atomic_copy` and makes
    ``checkpoint_utils.load_checkpoint`` resume from the newest intact checkpoint
    (idempotent)."""
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager

    from fairseq_crild.patches.patching import calling, patch_once

    patch_once(PathManager, "copy", calling(_copy), "atomic local checkpoint copies",
               kind="staticmethod")
    patch_once(checkpoint_utils, "load_checkpoint", calling(_load_checkpoint),
               "resume from the newest intact checkpoint")
