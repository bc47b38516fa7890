"""The learned and averaged modules ``cr_ild`` trains besides the student: the fit_dense
projection of the student's hidden states and the EMA copy of the student that can serve as
the consistency target.

They are built and updated here; the criterion registers them as its own ``projection``,
``ema_model`` and ``ema_updates`` because those names are the checkpoint format (a resumed
run, and every saved checkpoint, load them under exactly these keys).
"""

from __future__ import annotations

import copy
import logging
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from fairseq_crild.distill import losses

logger = logging.getLogger(__name__)


def fit_dense(width_in: int, width_out: int) -> nn.Linear:
    """The authors' fit_dense: a Linear with BERT's initialisation (N(0, 0.02), zero bias)."""
    layer = nn.Linear(width_in, width_out)
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


def wants_projection(objects: Sequence[str], mode: str, student_width: int,
                     teacher_width: int) -> bool:
    """A hidden-state or [CLS] loss needs fit_dense: always (--hidden-projection always, the
    authors' baselines) or when the widths differ."""
    return bool({"hidden", "cls"} & set(objects)) and (
        mode == "always" or student_width != teacher_width)


def build_projection(objects: Sequence[str], mode: str, student_width: int,
                     teacher_width: int) -> Optional[nn.Linear]:
    """fit_dense from the student's width to the teacher's, or None if none is wanted."""
    if not wants_projection(objects, mode, student_width, teacher_width):
        return None
    projection = fit_dense(student_width, teacher_width)
    logger.info(f"learned projection (fit_dense, --hidden-projection {mode}) "
                f"{student_width} -> {teacher_width}")
    return projection


def build_ema(student: nn.Module) -> nn.Module:
    """A frozen copy of the student, moved only by :func:`update_ema`."""
    ema = copy.deepcopy(student)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def update_ema(ema_model: nn.Module, ema_updates: Tensor, student: nn.Module,
               num_updates: int, decay: float) -> bool:
    """One EMA step per optimizer step, at the first training forward after it (so a resumed
    run, whose ``ema_updates`` counter comes from the checkpoint, updates exactly as an
    uninterrupted one). Returns whether it stepped."""
    done = int(num_updates)
    if done <= int(ema_updates):
        return False
    losses.ema_update(ema_model.parameters(), student.parameters(), decay)
    ema_updates.fill_(done)
    return True


def ema_counter() -> Tensor:
    """The saved count of optimizer steps the EMA copy has followed."""
    return torch.zeros((), dtype=torch.long)
