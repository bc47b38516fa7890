"""Freezing the student parameters no ILD loss reaches (the classification head, the pooler,
layers above the last mapped one, ...).

DDP fails on parameters that get no gradient, and the optimizer would decay them for
nothing; a tiny probe forward through the same request and feature selection as training
tells which parameters the distilled features depend on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List

import torch
from torch import Tensor, nn

from fairseq_crild.models.requests import FeatureRequest

logger = logging.getLogger(__name__)


def freeze_unreached(student: nn.Module, bos: int, request: FeatureRequest,
                     select: Callable[[Dict[str, Any]], List[Tensor]]) -> int:
    """Sets ``requires_grad=False`` on every trainable student parameter the features
    ``select(extra)`` of a forward with ``request`` do not depend on; returns how many
    scalars it froze. ``bos``: the first token of the probe (the dictionary's <s> / [CLS])."""
    probe = torch.full((2, 4), student.padding_idx + 1, dtype=torch.long)
    probe[:, 0] = bos
    device = next(student.parameters()).device
    _, extra = student(probe.to(device), request=request)
    total = sum(t.float().sum() for t in select(extra))
    params = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    frozen = 0
    for p, g in zip(params, grads):
        if g is None:
            p.requires_grad_(False)
            frozen += p.numel()
    logger.info(f"froze {frozen} student parameters that no ILD loss reaches")
    return frozen
