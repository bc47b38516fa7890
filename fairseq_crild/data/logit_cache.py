"""Teacher-logit cache for prediction-layer KD (stage 2): run the frozen teacher once.

Stage 2 trains on the same training split for several epochs (often for several seeds and
learning rates) against a frozen teacher, so the teacher's logits depend only on the
teacher's weights, the binarised data and the truncation length. :class:`TeacherLogitCache`
computes them once over every row of a split, stores them as a float32 ``.npy`` array
(row = example id, i.e. the row of the binarised split, which ``--train-subset-size`` and
``--label-noise`` keep unchanged) and serves them by the batch's ``id``. The file name holds
a fingerprint of everything the logits depend on, so a changed teacher or data set gets a
fresh file instead of stale logits; files appear only through an atomic rename, so a crash
never leaves a half-written cache that a later run could read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fairseq_crild.data.dictionary import vocab_fingerprint
from fairseq_crild.data.inference import predict_logits
from fairseq_crild.data.layout import load_column
from fairseq_crild.data.pair_dataset import SentencePairDataset
from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)

#: bump when the cached content changes meaning (invalidates every existing cache).
#: 2: rows of a RoBERTa-layout folder are the task's RoBERTa inputs (version 1 computed the
#: teacher on BERT-layout items there: an extra </s> and BERT's truncation)
CACHE_VERSION = 2
DEFAULT_SUBDIR = "teacher_logits"


class LogitCacheError(CrildError, ValueError):
    """The cache cannot serve this run (unsupported data set, ids outside the split...)."""


def weights_fingerprint(models: Sequence[nn.Module]) -> str:
    """sha256 over the models' state dicts (names, shapes, fp32 values), in order.

    Hashes the weights rather than the checkpoint file: re-saving a checkpoint with other
    training state (optimizer, step counters) keeps its cache, and in-memory teachers work.
    """
    h = hashlib.sha256()
    for model in models:
        for name, value in sorted(model.state_dict().items()):
            t = value.detach().cpu()
            t = t.float() if t.is_floating_point() else t
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
            h.update(t.contiguous().numpy().tobytes())
        h.update(b"--\n")
    return h.hexdigest()


def split_files(data_dir: str, split: str) -> list:
    """The binarised files of ``split`` (input0 and, for pairs, input1; .bin and .idx)."""
    files = []
    for kind in ("input0", "input1"):
        for ext in (".idx", ".bin"):
            path = os.path.join(data_dir, kind, split + ext)
            if os.path.isfile(path):
                files.append(path)
    if not files:
        raise LogitCacheError(f"no binarised {split!r} split under {data_dir}")
    return files


def data_fingerprint(data_dir: str, split: str) -> str:
    """sha256 of the split's token files (content, not mtime: copies keep their cache)."""
    h = hashlib.sha256()
    for path in split_files(data_dir, split):
        h.update(os.path.relpath(path, data_dir).encode() + b"\n")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def full_split_dataset(task, split: str) -> SentencePairDataset:
    """Every row of ``split`` as the task builds inputs (its layout and truncation, through
    ``task.pair_dataset``; no subset, no label noise)."""
    if getattr(task.cfg, "ild_data", ""):
        raise LogitCacheError("the teacher-logit cache covers the task's own training split; "
                              "it cannot be combined with --ild-data")
    input0 = load_column(task.cfg.data, "input0", split)
    if input0 is None:
        raise LogitCacheError(f"no binarised {split!r} split under {task.cfg.data}")
    return task.pair_dataset(input0, load_column(task.cfg.data, "input1", split), None)


class TeacherLogitCache:
    """Teacher logits of every row of one split, read by example id."""

    def __init__(self, logits: np.ndarray, path: str):
        self.logits = logits
        self.path = path

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @staticmethod
    def fingerprint(task, split: str, teacher_models: Sequence[nn.Module],
                    extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Everything the cached logits depend on (the file name hashes all of it)."""
        return {
            "version": CACHE_VERSION,
            "split": split,
            "teacher_weights_sha256": weights_fingerprint(teacher_models),
            "data_sha256": data_fingerprint(task.cfg.data, split),
            "vocab_sha256": vocab_fingerprint(task.dictionary),
            "max_positions": int(task.cfg.max_positions),
            "head": task.cfg.classification_head_name,
            "num_classes": int(task.num_classes),
            **(extra or {}),
        }

    @staticmethod
    def path_for(cache_dir: str, key: Dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return os.path.join(cache_dir, f"{key['split']}-{digest}.npy")

    @classmethod
    def load_or_build(
        cls,
        task,
        logits_fn: Callable[[Dict[str, Tensor]], Tensor],
        teacher_models: Sequence[nn.Module],
        cache_dir: str = "",
        split: str = "train",
        device: Optional[torch.device] = None,
        batch_size: int = 64,
        extra_key: Optional[Dict[str, Any]] = None,
    ) -> "TeacherLogitCache":
        """Reads the cache of this teacher/data/length, computing and storing it if absent.

        ``logits_fn(net_input)`` returns the teacher's (B, C) logits (as the criterion
        computes them live); ``teacher_models`` are hashed for the key; ``extra_key`` adds
        anything else the logits depend on (say an ensemble rule).
        """
        cache_dir = cache_dir or os.path.join(task.cfg.data, DEFAULT_SUBDIR)
        dataset = full_split_dataset(task, split)
        key = cls.fingerprint(task, split, teacher_models, extra_key)
        path = cls.path_for(cache_dir, key)
        want = (len(dataset), int(task.num_classes))
        cached = _try_load(path, want)
        if cached is not None:
            logger.info(f"teacher logits: reusing {path} ({want[0]} examples)")
            return cls(cached, path)
        start = time.time()
        logits = compute_logits(dataset, logits_fn, want[1], device, batch_size)
        os.makedirs(cache_dir, exist_ok=True)
        _atomic_save(path, logits, key)
        logger.info(f"teacher logits: computed {want[0]} examples in {time.time() - start:.1f}s "
                    f"-> {path}")
        return cls(np.load(path, mmap_mode="r"), path)

    def lookup(self, ids: Tensor, device: Optional[torch.device] = None) -> Tensor:
        """(B, C) float32 teacher logits of the examples ``ids`` (the batch's ``id``)."""
        idx = ids.detach().cpu().numpy().astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise LogitCacheError(f"example ids {int(idx.min())}..{int(idx.max())} outside the "
                                  f"{len(self)} cached rows of {self.path}")
        out = torch.from_numpy(np.ascontiguousarray(self.logits[idx], dtype=np.float32))
        return out if device is None else out.to(device)


def compute_logits(dataset: SentencePairDataset, logits_fn: Callable[[Dict[str, Tensor]], Tensor],
                   num_classes: int, device: Optional[torch.device], batch_size: int
                   ) -> np.ndarray:
    """Runs ``logits_fn`` over ``dataset`` in length-sorted batches (little padding); row i
    of the result is the example with id i."""
    order = dataset.ordered_indices()
    out = np.full((len(dataset), num_classes), np.nan, dtype=np.float32)
    if len(order):
        logits = predict_logits(logits_fn, dataset, batch_size, order, device)
        ids = np.asarray(dataset.indices, dtype=np.int64)[np.asarray(order, dtype=np.int64)]
        out[ids] = logits.numpy().reshape(len(order), num_classes)
    if np.isnan(out).any():
        raise LogitCacheError("teacher logits missing for some rows (or NaN logits)")
    return out


def _try_load(path: str, shape: tuple) -> Optional[np.ndarray]:
    if not os.path.isfile(path):
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        logger.warning(f"teacher logits: unreadable cache {path} ({err}); recomputing")
        return None
    if arr.shape != shape or arr.dtype != np.float32:
        logger.warning(f"teacher logits: {path} holds {arr.shape} {arr.dtype}, expected "
                       f"{shape} float32; recomputing")
        return None
    return arr


def _atomic_save(path: str, logits: np.ndarray, key: Dict[str, Any]) -> None:
    """Writes a temporary file in the same folder, syncs it, renames it into place."""
    folder = os.path.dirname(path)
    for target, write in ((path, lambda f: np.save(f, logits)),
                          (path[:-4] + ".json", lambda f: f.write(json.dumps(
                              {**key, "shape": list(logits.shape)}, indent=1).encode()))):
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
