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

from fairseq_crild.errors import CrildError


class UnsafeCheckpointError(CrildError, RuntimeError):
    """A checkpoint holds objects that safe loading refuses, or is not a checkpoint at all."""


class NotACheckpointError(UnsafeCheckpointError):
    """A readable torch file that is not a fairseq checkpoint (a tensor, a list, a dict
    without ``model``): fairseq's loader would fail on it with a KeyError or TypeError."""


FAIRSEQ_FIELDS = "a dict with 'model' (a state dict), 'cfg' or 'args', and 'optimizer_history'"
_ECHO = 200  # characters of a foreign error message an error of ours repeats


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _ECHO else text[:_ECHO] + "..."


def describe_foreign(path: str, err: BaseException) -> str:
    """Why fairseq's loader failed on ``path``, in one line, from what the file holds (raises
    UnsafeCheckpointError itself when torch cannot read the file at all)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as load_err:  # noqa: BLE001 - any failure means: not a torch file
        raise UnsafeCheckpointError(
            f"cannot read checkpoint {path}: {_short(load_err)} (truncated or not a torch "
            "checkpoint)") from None
    if not isinstance(obj, dict):
        return (f"{path} holds an object of type {type(obj).__name__}, not a fairseq checkpoint "
                f"({FAIRSEQ_FIELDS}); save one with fairseq-train or scripts/convert_hf_bert.py")
    if "model" not in obj:
        keys = sorted(map(str, obj))
        shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
        return (f"{path} is a dict without 'model' (keys: {shown or 'none'}), not a fairseq "
                f"checkpoint ({FAIRSEQ_FIELDS}); a bare state dict must be wrapped as "
                "{'model': state_dict, ...} by a conversion script")
    if not isinstance(obj["model"], dict):
        return (f"{path}: its 'model' is a {type(obj['model']).__name__}, not a state dict "
                "(parameter name -> tensor)")
    return (f"{path} is not a complete fairseq checkpoint (fairseq's loader failed: "
            f"{type(err).__name__}: {_short(err)}); it needs {FAIRSEQ_FIELDS}")


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

    from fairseq_crild.patches.patching import patch_once

    patch_once(checkpoint_utils, "load_checkpoint_to_cpu", _with_clear_errors,
               "safe loading with one clear error for a foreign or truncated file")


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
        except UnsafeCheckpointError:
            raise
        except EOFError as err:
            raise UnsafeCheckpointError(
                f"cannot read checkpoint {path}: {_short(err) or 'it ends early'} (truncated "
                "or not a torch checkpoint)"
            ) from None
        except (RuntimeError, KeyError, TypeError, AttributeError, IndexError, ValueError) as err:
            # a file torch reads but that is not fairseq's dict: say what it holds; a truncated
            # or foreign file: say that. Errors of a genuine fairseq checkpoint are re-raised.
            if _is_fairseq_shaped(path):
                raise
            raise NotACheckpointError(describe_foreign(path, err)) from None

    return load


def _is_fairseq_shaped(path: str) -> bool:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            return False
    return (isinstance(obj, dict) and isinstance(obj.get("model"), dict)
            and "optimizer_history" in obj)
