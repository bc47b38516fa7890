"""Lets fairseq read its own checkpoints on torch >= 2.6 without turning safe loading off.

torch >= 2.6 loads with ``weights_only=True``: only tensors, containers and allow-listed
types may be unpickled. fairseq checkpoints also hold an ``argparse.Namespace`` (legacy
``args``) and numpy scalars (meter values, best-checkpoint scores), so resuming from
``checkpoint_last.pt`` fails. We allow-list exactly those types and wrap fairseq's loader so
anything else (a pickled callable, a corrupted file) is refused with one clear message.
"""

from __future__ import annotations

import argparse
import functools
import pickle
import re
from typing import Any, Callable, List

import numpy as np
import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds objects that safe loading refuses, or is not a checkpoint at all."""


def _numpy_scalar_types() -> List[Any]:
    types: List[Any] = [np.dtype]
    try:  # numpy >= 1.25 keeps scalar reconstruction in numpy.core.multiarray / _core
        from numpy._core.multiarray import scalar  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    types.append(scalar)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        dtype_cls = getattr(getattr(np, "dtypes", None), name, None)
        if dtype_cls is not None:
            types.append(dtype_cls)
    return types


def allowed_checkpoint_globals() -> List[Any]:
    """The exact non-tensor types fairseq checkpoints contain."""
    return [argparse.Namespace, *_numpy_scalar_types()]


def install() -> None:
    """Allow-lists fairseq's checkpoint types and wraps its loader (idempotent)."""
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(allowed_checkpoint_globals())
    from fairseq import checkpoint_utils

    loader = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(loader, "_crild_wrapped", False):
        return
    checkpoint_utils.load_checkpoint_to_cpu = _with_clear_errors(loader)


def _with_clear_errors(loader: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(loader)
    def load(path, *args, **kwargs):
        try:
            return loader(path, *args, **kwargs)
        except pickle.UnpicklingError as err:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            reason = (f"it pickles {found.group(1)}, which is not an allowed type" if found
                      else "it is not a torch checkpoint")
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint {path}: {reason}. Safe loading allows tensors, "
                "containers, argparse.Namespace and numpy scalars; re-save the checkpoint "
                "with plain types (and only load files you trust)"
            ) from None
        except (EOFError, RuntimeError) as err:
            if isinstance(err, UnsafeCheckpointError):
                raise
            raise UnsafeCheckpointError(
                f"cannot read checkpoint {path}: {err} (truncated or not a torch checkpoint)"
            ) from None

    load._crild_wrapped = True  # type: ignore[attr-defined]
    return load
