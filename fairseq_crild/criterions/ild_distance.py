"""The per-object ILD distance of ``cr_ild``: hidden-state MSE, PKD's [CLS] term, attention
KL / CE and the Q/K/V relation KL, under the padding modes the options chose.

One place decides the distance of an object, so the layer-to-layer terms, BERT-EMD's cost
matrices and the consistency term all measure an object the same way. The loss functions
themselves are the pure ones of :mod:`fairseq_crild.distill.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional

from torch import Tensor

from fairseq_crild.distill import losses


@dataclass(frozen=True)
class IldDistance:
    """The distance between a student and a teacher feature of one object."""

    pad_mode: str  # exclude | include (hidden MSE, attention CE)
    relation_pad_mode: str  # exclude | include (Q/K/V relations)
    attention_kl: bool  # --attention-loss kl (0 at equality) or the literal ce
    relation_heads: int
    #: PKD's term is a mean over the mapped layers: the number of mapped layers, 1 under
    #: BERT-EMD (its cost matrix wants the per-pair value: its flow already sums to 1)
    cls_layers: int

    def __call__(self, obj: str, student: Any, target: Any, mask: Tensor,
                 projection: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """``projection`` (fit_dense) maps the student's hidden / [CLS] vectors first."""
        if obj in ("hidden", "cls") and projection is not None:
            student = projection(student)
        if obj == "hidden":
            return losses.hidden_mse(student, target, mask, self.pad_mode)
        if obj == "cls":
            # the authors' PKD term: mean over batch x mapped layers x hidden size; forward
            # sums the per-layer terms, so each is divided by the number of mapped layers
            return losses.pkd_cls_loss(student, target, feature_mean=True,
                                       num_layers=self.cls_layers)
        if obj == "attention":
            return losses.attention_kl(student, target, mask, kl=self.attention_kl,
                                       pad_mask_mode=self.pad_mode)
        return losses.qkv_relation_kl(student, target, mask, self.relation_heads,
                                      self.relation_pad_mode)

    def on_single_tensors(self, obj: str) -> Callable[..., Tensor]:
        """The distance of ``obj`` on single tensors, as the consistency term wants it
        (:func:`fairseq_crild.distill.losses.consistency_loss` sums over the Q/K/V entries
        itself)."""
        if obj == "hidden":
            return partial(losses.hidden_mse, pad_mask_mode=self.pad_mode)
        if obj == "attention":
            return partial(losses.attention_kl, kl=self.attention_kl,
                           pad_mask_mode=self.pad_mode)
        return partial(losses.relation_kl, num_relation_heads=self.relation_heads,
                       pad_mask_mode=self.relation_pad_mode)
