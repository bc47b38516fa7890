"""CR-ILD's mixup and consistency term: drawing lambda and the partners of a batch, the
ramped-up weight, and the consistency loss between the student's features of the mixed
input and the mix of its clean features.

The draws are seeded by (--seed, update, the batch's place in the update's global batch),
so a resumed run, and N ranks x --update-freq U, draw what one uninterrupted process with
--update-freq N*U draws (:func:`fairseq_crild.patches.distributed.batch_generator`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fairseq_crild.criterions.ild_features import EMBEDDING_KEY, object_of
from fairseq_crild.distill import losses
from fairseq_crild.models.requests import MixupSpec
from fairseq_crild.patches.distributed import batch_generator


class MicroBatchCounter:
    """Index of a training forward among those of the current update (--update-freq): the
    third part of the mixup seed. Not saved: a resumed run restarts at an update boundary."""

    def __init__(self) -> None:
        self._at: Tuple[int, int] = (-1, -1)  # (update, index of its last forward)

    def next(self, num_updates: int) -> int:
        """The index of this forward: 0 for the first forward of update ``num_updates``."""
        update = int(num_updates)
        last, index = self._at
        index = index + 1 if update == last else 0
        self._at = (update, index)
        return index


def draw_mixup(seed: int, num_updates: int, micro_batch: int, batch_size: int, alpha: float,
               partner_mode: str, device: torch.device) -> MixupSpec:
    """lam ~ Beta(alpha, alpha) folded to max(lam, 1 - lam), then the partners, from one
    generator seeded by the run's seed and the batch's place in training."""
    rng = batch_generator(seed, num_updates, micro_batch)
    lam = losses.sample_mixup_lambda(alpha, generator=rng)
    partner = losses.mixup_partner(batch_size, partner_mode, generator=rng)
    return MixupSpec(lam=lam, partner=partner.to(device))


def consistency_weight_now(weight: float, max_epoch: int, max_update: int,
                           current_epoch: int, num_updates: int) -> float:
    """w_ic ramped up linearly: over epochs counted from 0, as the authors (the first epoch
    has none), when --max-epoch is set; else over updates when --max-update is; else flat."""
    if weight <= 0:
        return 0.0
    if max_epoch and max_epoch > 0:
        epoch = current_epoch - 1  # epochs from 0, as the authors
        return losses.consistency_rampup(epoch, max_epoch, weight)
    if max_update and max_update > 0:
        return losses.consistency_rampup(num_updates, max_update, weight)
    return weight


def consistency_term(mixed: Dict[str, Any], clean: Dict[str, Any], objects: Sequence[str],
                     mixup: MixupSpec, mask: Tensor,
                     distance_of: Callable[[str], Callable[..., Tensor]],
                     gather: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
    """Sum over the consistency objects' features of ``lam * l(mixed, clean) + (1 - lam) *
    l(mixed, clean of the partner)`` (:func:`fairseq_crild.distill.losses.consistency_loss`;
    ``distance_of(obj)``: the object's ILD distance l on single tensors; ``gather``: how the
    partners' rows are picked, e.g. a relation memo's)."""
    total = 0.0
    for key, value in mixed.items():
        obj = object_of(key)
        # the embedding output is the mixing point itself: mixed = lam e_i + (1-lam) e_j
        # by construction, and its "consistency" would only pull e_i and e_j together
        if obj not in objects or key == EMBEDDING_KEY:
            continue
        total = total + losses.consistency_loss(
            distance_of(obj), value, clean[key], mixup.partner, mixup.lam, mask, gather)
    return total  # type: ignore[return-value]
