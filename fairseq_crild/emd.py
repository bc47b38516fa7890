"""BERT-EMD: many-to-many layer mapping by Earth Mover's Distance (Li et al., EMNLP 2020).

What is implemented (``cr_ild --ild-layer-map emd``, preset ``--ild-preset emd``), for a
student with M layers and a teacher with N layers:

* Layer weights. Every student layer i has a weight ``w_s[i]`` and every teacher layer j a
  weight ``w_t[j]``, both starting uniform (1/M, 1/N) and each summing to 1. They are the
  "earth" to move: the supply of the student side and the demand of the teacher side.
* Ground distance. For each distilled object (hidden states, attention, ...) the cost
  matrix ``D[i, j]`` holds the ordinary ILD loss between student layer i and teacher layer j
  (the criterion's own distances: hidden-state MSE through the learned projection when the
  widths differ, attention KL, ...). The paper uses MSE on attention scores, we use the
  project's attention distance (KL of the attention distributions, as our TinyBERT-style
  preset), so that the two methods differ only in the layer mapping.
* Flow. ``F = argmin_F sum_ij F_ij D_ij`` subject to ``F >= 0``, ``sum_j F_ij = w_s[i]``,
  ``sum_i F_ij = w_t[j]`` (a balanced transport problem since both sides sum to 1), solved
  exactly with POT's network simplex ``ot.emd`` on a detached float64 copy of D, on the CPU:
  an M x N problem, microseconds, outside autograd.
* Loss. ``EMD = sum_ij F_ij D_ij / sum_ij F_ij = sum_ij F_ij D_ij``, with F a constant: the
  gradient reaches the student through D only. One flow and one loss per object.
* Cost attention (the weight update, after every training forward). The transported cost
  per unit of weight of student layer i is ``c_s[i] = sum_j F_ij D_ij / w_s[i]``; the new
  weight is ``w_s = softmax(w~ / T)`` with ``w~[i] = (sum_k c_s[k]) / c_s[i]``: a layer whose
  knowledge is cheap to transport gains weight, T (``--emd-temperature``) sets how sharply.
  The same for the teacher side with ``c_t[j] = sum_i F_ij D_ij / w_t[j]``. With several
  objects (attention and hidden), the weights each object proposes are averaged and shared,
  the default of the authors' code (it can also keep them separate; we do not).
* Second softmax (``--emd-extra-softmax``). The paper's formulas stop at
  ``softmax(w~ / T)`` (``off``). The authors' released code then applies one more softmax,
  without temperature, to the averaged weights, and does so by default (``on``, our default
  too, since their results come from it). It matters: ``w~`` grows like the inverse of a unit
  cost, so a layer with a few times the cost of the cheapest gets ``e^-10`` of its weight at
  T = 1 and the flow collapses onto the cheapest layers; the second softmax of weights in
  [0, 1] keeps every layer within a factor e of the others.
* Embedding layer: BERT-EMD also matches the embedding outputs one-to-one with MSE; the
  criterion adds that term (``--emd-embedding-loss on``) when hidden states are distilled.

Numerical guards (ours, documented because the paper's formulas divide by weights and
costs): weights are floored at ``MIN_WEIGHT`` and renormalised, so every layer ships some
earth and its unit cost stays defined; a zero unit cost counts as ``1e-12`` of the total;
if all transported costs are 0 (identical layers) the weights stay as they are; a cost
matrix with NaN/inf (an fp16 overflow) gets the independent plan ``w_s w_t^T`` and no
weight update, so fairseq's loss scaler can react to the non-finite loss as usual.

The weights are frozen ``nn.Parameter``s (never in the optimizer) because fairseq saves a
criterion's state dict only when the criterion has parameters: so they travel in
``checkpoint_*.pt`` under ``criterion`` and a resumed run continues the same weights. With
several workers the cost matrices are averaged over workers before the solve, so every
worker computes the same flow and the same weights.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MIN_WEIGHT", "EmdLayerWeights", "cost_attention", "cost_matrix",
           "pairwise_attention_kl", "transport_plan"]

# the masked-softmax fill value of fairseq_crild.losses (a finite "minus infinity")
_NEG = torch.finfo(torch.float32).min

#: Smallest layer weight kept after an update (the weights are renormalised afterwards).
MIN_WEIGHT = 1e-9


def _as_weights(weights: Sequence[float] | np.ndarray, n: int, who: str) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"EMD: {who} weights have {w.size} entries for {n} layers")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"EMD: {who} weights must be finite, >= 0 and not all 0, got {w}")
    return w / w.sum()


def transport_plan(cost: np.ndarray, student_weights: Sequence[float] | np.ndarray,
                   teacher_weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """The optimal flow F (M x N) moving the student weights onto the teacher weights at the
    ground cost ``cost`` (M x N), solved exactly by POT's ``ot.emd``. Both weight vectors
    are normalised to sum 1 (the balanced case of the paper's EMD)."""
    import ot  # imported here: POT takes seconds to import and only BERT-EMD needs it

    d = np.ascontiguousarray(cost, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"EMD: the cost matrix must be 2-D (student x teacher), got {d.shape}")
    a = _as_weights(student_weights, d.shape[0], "student")
    b = _as_weights(teacher_weights, d.shape[1], "teacher")
    if not np.all(np.isfinite(d)):
        return np.outer(a, b)
    return np.asarray(ot.emd(a, b, d), dtype=np.float64)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _attend(transported: np.ndarray, weights: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(w~ / T), w~[i] = sum(c) / c[i], c[i] = transported[i] / weights[i]."""
    unit = transported / np.maximum(weights, MIN_WEIGHT)
    total = float(unit.sum())
    if not np.isfinite(total) or total <= 0.0:
        return weights.copy()
    score = total / np.maximum(unit, total * 1e-12)
    w = np.maximum(_softmax(score / temperature), MIN_WEIGHT)
    return w / w.sum()


def cost_attention(plan: np.ndarray, cost: np.ndarray,
                   student_weights: Sequence[float] | np.ndarray,
                   teacher_weights: Sequence[float] | np.ndarray,
                   temperature: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """BERT-EMD's weight update from a flow: (new student weights, new teacher weights).

    Layers whose share of the flow costs little per unit of weight gain weight (see the
    module docstring for the formulas)."""
    if temperature <= 0:
        raise ValueError(f"EMD: the temperature must be > 0, got {temperature}")
    plan = np.asarray(plan, dtype=np.float64)
    d = np.asarray(cost, dtype=np.float64)
    if plan.shape != d.shape:
        raise ValueError(f"EMD: plan {plan.shape} and cost {d.shape} differ in shape")
    a = _as_weights(student_weights, d.shape[0], "student")
    b = _as_weights(teacher_weights, d.shape[1], "teacher")
    transported = plan * d
    return (_attend(transported.sum(axis=1), a, temperature),
            _attend(transported.sum(axis=0), b, temperature))


def cost_matrix(distance, n_student: int, n_teacher: int) -> Tensor:
    """Stacks ``distance(i, j)`` (a scalar tensor with autograd) into the M x N matrix D."""
    return torch.stack([torch.stack([distance(i, j) for j in range(n_teacher)])
                        for i in range(n_student)])


def pairwise_attention_kl(scores_s: Sequence[Tensor], scores_t: Sequence[Tensor],
                          mask: Optional[Tensor] = None, kl: bool = True) -> Tensor:
    """The M x N matrix of ``losses.attention_kl(scores_s[i], scores_t[j], mask, kl)``,
    value for value (the same operations on the same tensors), with each layer's masked
    log-softmax computed once instead of once per pair: M + N softmaxes instead of 2 M N,
    which is most of the cost of BERT-EMD's attention cost matrix."""
    shape = scores_s[0].shape
    if len(shape) != 4 or any(x.shape != shape for x in [*scores_s, *scores_t]):
        raise ValueError("pairwise_attention_kl: expected (B, H, L, L) scores of one shape, got "
                         f"{sorted({tuple(x.shape) for x in [*scores_s, *scores_t]})}")
    key_mask = row_mask = None
    if mask is not None:
        mask = mask.bool()
        key_mask, row_mask = mask[:, None, None, :], mask[:, None, :, None]

    def log_probs(scores: Tensor) -> Tensor:
        x = scores.float()
        if key_mask is not None:
            x = x.masked_fill(~key_mask, _NEG)
        return F.log_softmax(x, dim=-1)

    zero = torch.zeros((), dtype=torch.float32, device=scores_s[0].device)
    logp_s = [log_probs(x) for x in scores_s]
    teachers = []
    for x in scores_t:
        logp_t = log_probs(x)
        p_t = logp_t.exp()
        valid = p_t > 0
        if key_mask is not None:
            valid = valid & key_mask
        teachers.append((valid, torch.where(valid, logp_t, zero), torch.where(valid, p_t, zero)))
    rows = None if row_mask is None else row_mask[..., 0].expand(shape[:-1])

    def divergence(ls: Tensor, valid: Tensor, lt: Tensor, pt: Tensor) -> Tensor:
        ls = torch.where(valid, ls, zero)
        per_row = (pt * (lt - ls)).sum(dim=-1) if kl else -(pt * ls).sum(dim=-1)
        if rows is None:
            return per_row.mean()
        return torch.where(rows, per_row, zero).sum() / rows.sum().clamp(min=1)

    return torch.stack([torch.stack([divergence(ls, *t) for t in teachers]) for ls in logp_s])


def _mean_over_workers(cost: Tensor) -> np.ndarray:
    """Detached float64 copy of D, averaged over distributed workers (same flow on all)."""
    c = cost.detach().double()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        c = c.clone()
        dist.all_reduce(c)
        c /= dist.get_world_size()
    return c.cpu().numpy()


class EmdLayerWeights(nn.Module):
    """The BERT-EMD layer weights of one criterion, with the solve-and-update step."""

    def __init__(self, n_student: int, n_teacher: int, temperature: float = 1.0,
                 extra_softmax: bool = True):
        super().__init__()
        if n_student <= 0 or n_teacher <= 0:
            raise ValueError(f"EMD: layer counts must be > 0 ({n_student}, {n_teacher})")
        if temperature <= 0:
            raise ValueError(f"--emd-temperature must be > 0, got {temperature}")
        # frozen parameters, not buffers: fairseq saves criterion state only if it has any
        self.student_weights = nn.Parameter(
            torch.full((n_student,), 1.0 / n_student, dtype=torch.float64), requires_grad=False)
        self.teacher_weights = nn.Parameter(
            torch.full((n_teacher,), 1.0 / n_teacher, dtype=torch.float64), requires_grad=False)
        self.temperature = temperature
        self.extra_softmax = extra_softmax
        self.last_plans: Dict[str, np.ndarray] = {}

    def _apply(self, fn, recurse: bool = True):
        """Device moves apply; dtype casts (--fp16, --bf16) do not: the weights stay float64."""
        exact = {name: p.detach().clone() for name, p in self._parameters.items()}
        super()._apply(fn, recurse)
        for name, p in self._parameters.items():
            if p is not None and p.dtype != torch.float64:
                p.data = exact[name].to(device=p.device)
        return self

    def weights(self) -> Tuple[np.ndarray, np.ndarray]:
        return (self.student_weights.detach().cpu().numpy().copy(),
                self.teacher_weights.detach().cpu().numpy().copy())

    def forward(self, costs: Mapping[str, Tensor], update: bool) -> Dict[str, Tensor]:
        """EMD loss ``sum F * D`` per object; with ``update`` (training), the cost-attention
        step then replaces the weights by the mean of what each object proposes (then, with
        ``extra_softmax``, by its softmax)."""
        w_s, w_t = self.weights()
        out: Dict[str, Tensor] = {}
        proposals = []
        for name, cost in costs.items():
            d = _mean_over_workers(cost)
            plan = transport_plan(d, w_s, w_t)
            self.last_plans[name] = plan
            out[name] = (torch.from_numpy(plan).to(cost) * cost).sum()
            if update and np.all(np.isfinite(d)):
                proposals.append(cost_attention(plan, d, w_s, w_t, self.temperature))
        if proposals:
            new_s = np.mean([p[0] for p in proposals], axis=0)
            new_t = np.mean([p[1] for p in proposals], axis=0)
            if self.extra_softmax:
                new_s, new_t = _softmax(new_s), _softmax(new_t)
            with torch.no_grad():
                self.student_weights.copy_(torch.from_numpy(new_s))
                self.teacher_weights.copy_(torch.from_numpy(new_t))
        return out
