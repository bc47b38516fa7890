"""Running one criterion twice, with a switch off then on, from the same random draws."""

from typing import Any, Dict, Tuple

import torch

Run = Tuple[Dict[str, Any], Dict[str, torch.Tensor], torch.Tensor]


def both_ways(crit, student, sample, switch: str) -> Tuple[Run, Run]:
    """(log, gradients, next random draw) with ``crit.<switch>`` False, then True: the same
    mixup draw (a fresh micro-batch cache) and the same dropout (seed 0) each time, so any
    difference is the switch's."""
    out = {}
    for flag in (False, True):
        setattr(crit, switch, flag)
        crit._micro_batches = type(crit._micro_batches)()  # the same mixup draw
        student.zero_grad()
        torch.manual_seed(0)  # the same dropout
        loss, _, log = crit(student, sample)
        loss.backward()
        out[flag] = (log, {n: p.grad.clone() for n, p in student.named_parameters()
                           if p.grad is not None}, torch.randn(3))
    return out[False], out[True]
