"""The per-object ILD distance of ``cr_ild``: hidden-state MSE, PKD's [CLS] term, attention
KL / CE and the Q/K/V relation KL, under the padding modes the options chose.

One place decides the distance of an object, so the layer-to-layer terms, BERT-EMD's cost
matrices and the consistency term all measure an object the same way. The loss functions
themselves are the pure ones of :mod:`fairseq_crild.distill.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple

from torch import Tensor

from fairseq_crild.distill import losses, relation_kernel


class RelationMemo:
    """The Q/K/V relation log-probabilities of one criterion forward, each computed once.

    CR-ILD distils the student's relations on the mixed input three times (the ILD term and
    both consistency terms), and its second consistency term compares them with the clean
    relations of each example's partner. With a memo (``log_probs`` of
    :func:`fairseq_crild.distill.losses.relation_kl`, ``gather`` of
    :func:`~fairseq_crild.distill.losses.consistency_loss`) the student's side is computed
    once (its gradient summed over the terms before one backward through the softmax and the
    product, instead of three), and the partner's clean side is the clean side's partner
    rows whenever the partner permutation maps the mask onto itself (``mask[partner] ==
    mask``: the reverse partner is an involution, so the union mask of a pair is the same
    for both), since every example then sees the same inputs and mask as in the clean term.
    Values are those computed afresh, bit for bit; gradients differ by rounding (the order
    of the sum). Entries are keyed by tensor identity and hold their tensors, so an id is
    never reused while its entry lives; build one memo per forward. ``side`` computes a
    side afresh (default :func:`~fairseq_crild.distill.losses.relation_log_probs`).
    """

    def __init__(self, side: Optional[losses.RelationLogProbs] = None) -> None:
        self.side = side
        self._logp: Dict[Tuple[int, int, int], Tuple[Tensor, Tensor, Tensor]] = {}
        self._gathered: Dict[int, Tuple[Tensor, Tensor, Tensor]] = {}
        self._onto_itself: Dict[Tuple[int, int], Tuple[Tensor, Tensor, bool]] = {}

    def gather(self, x: Tensor, index: Tensor) -> Tensor:
        """``x.index_select(0, index)``, remembered as picked from ``x``."""
        out = x.index_select(0, index)
        self._gathered[id(out)] = (out, x, index)
        return out

    def _maps_onto_itself(self, keep: Tensor, index: Tensor) -> bool:
        key = (id(keep), id(index))
        hit = self._onto_itself.get(key)
        if hit is None or hit[0] is not keep or hit[1] is not index:
            hit = (keep, index, bool(keep.index_select(0, index).equal(keep)))
            self._onto_itself[key] = hit
        return hit[2]

    def _known(self, x: Tensor, keep: Tensor, heads: int) -> Optional[Tensor]:
        hit = self._logp.get((id(x), id(keep), heads))
        if hit is not None and hit[0] is x and hit[1] is keep:
            return hit[2]
        return None

    def log_probs(self, x: Tensor, heads: int, keep: Tensor, who: str = "input") -> Tensor:
        """:func:`fairseq_crild.distill.losses.relation_log_probs`, once per (x, keep)."""
        known = self._known(x, keep, heads)
        if known is not None:
            return known
        picked = self._gathered.get(id(x))
        source = None
        if picked is not None and picked[0] is x and self._maps_onto_itself(keep, picked[2]):
            source = self._known(picked[1], keep, heads)
        if source is not None:
            out = source.index_select(0, picked[2])
        else:
            out = (self.side or losses.relation_log_probs)(x, heads, keep, who)
        self._logp[(id(x), id(keep), heads)] = (x, keep, out)
        return out


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
    #: --relation-kl-impl: torch (eager ops) or cpp (the fused C++ relation KL)
    relation_impl: str = "torch"

    def relation_functions(self) -> Tuple[losses.RelationLogProbs, losses.RelationDivergence]:
        """(one side's log-probabilities, the KL from both) of ``relation_impl``."""
        return relation_kernel.relation_functions(self.relation_impl)

    def relation_memo(self) -> RelationMemo:
        """A memo for one forward, computing its sides as ``relation_impl`` says."""
        return RelationMemo(None if self.relation_impl == "torch"
                            else self.relation_functions()[0])

    def __call__(self, obj: str, student: Any, target: Any, mask: Tensor,
                 projection: Optional[Callable[[Tensor], Tensor]] = None,
                 memo: Optional[RelationMemo] = None) -> Tensor:
        """``projection`` (fit_dense) maps the student's hidden / [CLS] vectors first;
        ``memo`` shares relation log-probabilities between the terms of one forward."""
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
        side, divergence = self.relation_functions()
        return losses.qkv_relation_kl(student, target, mask, self.relation_heads,
                                      self.relation_pad_mode,
                                      memo.log_probs if memo is not None else side, divergence)

    def on_single_tensors(self, obj: str,
                          memo: Optional[RelationMemo] = None) -> Callable[..., Tensor]:
        """The distance of ``obj`` on single tensors, as the consistency term wants it
        (:func:`fairseq_crild.distill.losses.consistency_loss` sums over the Q/K/V entries
        itself)."""
        if obj == "hidden":
            return partial(losses.hidden_mse, pad_mask_mode=self.pad_mode)
        if obj == "attention":
            return partial(losses.attention_kl, kl=self.attention_kl,
                           pad_mask_mode=self.pad_mode)
        side, divergence = self.relation_functions()
        return partial(losses.relation_kl, num_relation_heads=self.relation_heads,
                       pad_mask_mode=self.relation_pad_mode,
                       log_probs=memo.log_probs if memo is not None else side,
                       divergence=divergence)
