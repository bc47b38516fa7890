"""Device and precision checks made before fairseq starts a run.

fairseq's ``--fp16`` builds CUDA buffers unconditionally (its FP16Optimizer asks for
``torch.cuda.current_device()``), so on a CPU it ends in "AssertionError: Torch not compiled
with CUDA enabled" deep in the trainer. The plugin's ``--bf16`` runs on the CPU (bfloat16
autocast, fp32 master weights; see models/bert.py), so the error says to use that instead.
"""

from __future__ import annotations

from typing import Any

import torch

from fairseq_crild.errors import CrildError


class PrecisionConfigError(CrildError, ValueError):
    """A precision flag the device cannot run; the message names the flag and the fix."""


def fp16_on_cpu_message() -> str:
    return ("--fp16 needs a GPU (fairseq's fp16 training is CUDA-only); use --bf16 on the "
            "CPU, or drop --cpu on a machine with CUDA")


def check_precision(cfg: Any) -> None:
    """Refuses ``--fp16`` / ``--memory-efficient-fp16`` on a run without CUDA (``--cpu``, or
    no CUDA device) with one sentence instead of fairseq's AssertionError."""
    common = cfg.common
    fp16 = bool(getattr(common, "fp16", False) or getattr(common, "memory_efficient_fp16", False))
    if not fp16:
        return
    if bool(getattr(common, "cpu", False)) or not torch.cuda.is_available():
        raise PrecisionConfigError(fp16_on_cpu_message())
