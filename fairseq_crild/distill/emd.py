"""BERT-EMD: many-to-many layer mapping by Earth Mover's Distance (Li et al., EMNLP 2020),
in two variants (``cr_ild --ild-layer-map emd``, preset ``--ild-preset emd``,
``--emd-variant``).

Common part, for a student with M layers and a teacher with N layers:

* Layer weights. Every student layer i has a weight ``w_s[i]`` and every teacher layer j a
  weight ``w_t[j]``, both starting uniform (1/M, 1/N) and each summing to 1. They are the
  "earth" to move: the supply of the student side and the demand of the teacher side.
* Ground distance. For each distilled object (hidden states, attention, ...) the cost
  matrix ``C[i, j]`` holds a per-layer loss between student layer i and teacher layer j:
  hidden-state MSE (through the criterion's learned projection), and for attention either
  the MSE of the pre-softmax scores (``pairwise_attention_mse``, the BERT-EMD paper's and the
  CR-ILD authors' cost) or the project's attention KL (``pairwise_attention_kl``).
* Flow. ``F = argmin_F sum_ij F_ij C_ij`` subject to ``F >= 0``, ``sum_j F_ij = w_s[i]``,
  ``sum_i F_ij = w_t[j]`` (balanced: both sides sum to 1), solved exactly with POT's
  network simplex ``ot.emd`` on a detached float64 copy of C, on the CPU: an M x N problem,
  microseconds, outside autograd.
* Loss. ``EMD = sum_ij F_ij C_ij`` with F a constant: the gradient reaches the student
  through C only. One flow and one loss per object.
* Unit transport cost. The cost one unit of a layer's weight pays in the flow:
  ``u_s[i] = sum_j F_ij C_ij / sum_j F_ij`` for student layer i and
  ``u_t[j] = sum_i F_ij C_ij / sum_i F_ij`` for teacher layer j (``unit_transport_costs``);
  a layer that ships no earth at all (zero row/column of F) gets its cheapest pair,
  ``min_j C_ij`` (resp. ``min_i C_ij``), the unit cost of a marginal unit.

``--emd-variant release`` (default; the BERT-EMD baseline of the CR-ILD authors' release):

* Update after every training forward: ``w_s[i] = (1 / u_s[i]) / sum_k (1 / u_s[k])``,
  likewise for the teacher (``release_weights``): no softmax, no temperature.
* Separate weights per object: the attention term and the hidden-state term each have their
  own student and teacher weights, their own flow and their own update.
* Every weight is reset to uniform at the start of every epoch (``begin_epoch``).

``--emd-variant bert_emd`` (the BERT-EMD paper's update, "cost attention"):

* ``w_s = softmax(w~ / T)`` with ``w~[i] = (sum_k u_s[k]) / u_s[i]`` (``cost_attention``),
  T = ``--emd-temperature``; likewise for the teacher. The weights each object proposes are
  averaged and shared by all objects. No reset between epochs.
* ``--emd-extra-softmax on`` applies one more softmax, without temperature, to the averaged
  weights (a second softmax found in the BERT-EMD code). Off by default, because it defeats
  the update: weights lie in [0, 1], so their softmax stays within a factor e of uniform,
  and since the first softmax is nearly one-hot whenever the costs differ noticeably, the
  second one pins the weights at ``e : 1 : ... : 1`` whatever the costs (for 3 layers
  0.576 / 0.212 / 0.212, the figures an earlier run of ours ended with).

Embedding layer: BERT-EMD also matches the embedding outputs one-to-one with MSE; the
criterion adds that term (``--emd-embedding-loss on``) when hidden states are distilled.

Numerical guards (ours, documented because the formulas divide by weights and costs):
weights are floored at ``MIN_WEIGHT`` and renormalised, so every layer ships some earth and
its unit cost stays defined; a zero unit cost counts as ``1e-12`` of the sum of unit costs
(an exact match would otherwise take all the weight at once); if all transported costs are
0 (identical layers) the weights stay as they are; a cost matrix with NaN/inf (an fp16
overflow) gets the independent plan ``w_s w_t^T`` and no weight update, so fairseq's loss
scaler can react to the non-finite loss as usual.

The weights are frozen ``nn.Parameter``s (never in the optimizer) because fairseq saves a
criterion's state dict only when the criterion has parameters: so they travel in
``checkpoint_*.pt`` under ``criterion`` (``emd.student_weights`` / ``emd.teacher_weights``
for bert_emd, ``emd.<object>_student_weights`` / ``emd.<object>_teacher_weights`` for
release), together with the epoch of the last reset (``emd.epoch``), so a run resumed in the
middle of an epoch neither resets nor loses its weights. With several workers the cost
matrices are averaged over workers before the solve, so every worker computes the same flow
and the same weights.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from fairseq_crild.distill.losses import masked_log_softmax, row_divergence, teacher_rows

__all__ = ["MIN_WEIGHT", "VARIANTS", "EmdLayerWeights", "cost_attention", "cost_matrix",
           "pairwise_attention_kl", "pairwise_attention_mse", "release_weights",
           "transport_plan", "unit_transport_costs"]

#: Smallest layer weight kept after an update (the weights are renormalised afterwards).
MIN_WEIGHT = 1e-9

#: ``--emd-variant`` values: the CR-ILD authors' release, the BERT-EMD paper's update.
VARIANTS = ("release", "bert_emd")

# parameter-name group of the bert_emd variant's shared weights (the pre-variant names)
_SHARED = ""


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


def _check_plan(plan: np.ndarray, cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    plan = np.asarray(plan, dtype=np.float64)
    d = np.asarray(cost, dtype=np.float64)
    if plan.shape != d.shape or d.ndim != 2:
        raise ValueError(f"EMD: plan {plan.shape} and cost {d.shape} must be equal 2-D shapes")
    return plan, d


def unit_transport_costs(plan: np.ndarray, cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(u_s, u_t): the transport cost per unit of weight of each student and teacher layer,
    ``u_s[i] = sum_j F_ij C_ij / sum_j F_ij`` and ``u_t[j] = sum_i F_ij C_ij / sum_i F_ij``;
    a layer with no flow gets its cheapest pair (``min_j C_ij``, resp. ``min_i C_ij``)."""
    plan, d = _check_plan(plan, cost)
    transported = plan * d

    def per_unit(axis: int) -> np.ndarray:
        moved, shipped = transported.sum(axis=axis), plan.sum(axis=axis)
        cheapest = d.min(axis=axis)
        safe = np.where(shipped > 0, shipped, 1.0)
        return np.where(shipped > 0, moved / safe, cheapest)

    return per_unit(1), per_unit(0)


def _inverse_share(unit: np.ndarray, old: np.ndarray) -> np.ndarray:
    """w[i] = (1 / u[i]) / sum_k (1 / u[k]), with the module's guards."""
    total = float(unit.sum())
    if not np.isfinite(total) or total <= 0.0:
        return old.copy()
    inverse = 1.0 / np.maximum(unit, total * 1e-12)
    w = np.maximum(inverse / inverse.sum(), MIN_WEIGHT)
    return w / w.sum()


def release_weights(plan: np.ndarray, cost: np.ndarray,
                    student_weights: Sequence[float] | np.ndarray,
                    teacher_weights: Sequence[float] | np.ndarray,
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """The CR-ILD release's weight update from a flow: each layer's new weight is
    proportional to 1 / its unit transport cost, normalised to sum 1 (no softmax, no
    temperature). The old weights are returned where no update is defined (all costs 0)."""
    plan, d = _check_plan(plan, cost)
    a = _as_weights(student_weights, d.shape[0], "student")
    b = _as_weights(teacher_weights, d.shape[1], "teacher")
    u_s, u_t = unit_transport_costs(plan, d)
    return _inverse_share(u_s, a), _inverse_share(u_t, b)


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
    plan, d = _check_plan(plan, cost)
    a = _as_weights(student_weights, d.shape[0], "student")
    b = _as_weights(teacher_weights, d.shape[1], "teacher")
    transported = plan * d
    return (_attend(transported.sum(axis=1), a, temperature),
            _attend(transported.sum(axis=0), b, temperature))


def cost_matrix(distance, n_student: int, n_teacher: int) -> Tensor:
    """Stacks ``distance(i, j)`` (a scalar tensor with autograd) into the M x N matrix C."""
    return torch.stack([torch.stack([distance(i, j) for j in range(n_teacher)])
                        for i in range(n_student)])


def _check_scores(name: str, scores_s: Sequence[Tensor], scores_t: Sequence[Tensor]):
    shape = scores_s[0].shape
    if len(shape) != 4 or any(x.shape != shape for x in [*scores_s, *scores_t]):
        raise ValueError(f"{name}: expected (B, H, L, L) scores of one shape, got "
                         f"{sorted({tuple(x.shape) for x in [*scores_s, *scores_t]})}")
    return shape


def pairwise_attention_mse(scores_s: Sequence[Tensor], scores_t: Sequence[Tensor],
                           mask: Optional[Tensor] = None) -> Tensor:
    """The M x N matrix of attention-score MSEs, BERT-EMD's attention cost: entry (i, j) is
    the mean over (batch, head, query, key) of ``(S_s[i] - S_t[j])^2`` on pre-softmax
    scores, over real queries and keys only (``mask``, True at real tokens). With
    ``mask=None`` every entry counts, and non-finite scores (the model's -inf at padded
    keys) count as 0 in both models, so a batch padded to a fixed length is averaged over
    all its positions."""
    shape = _check_scores("pairwise_attention_mse", scores_s, scores_t)
    zero = torch.zeros((), dtype=torch.float32, device=scores_s[0].device)
    if mask is not None:
        mask = mask.bool()
        keep = (mask[:, None, :, None] & mask[:, None, None, :]).expand(shape)
        count = keep.sum().clamp(min=1)
    else:
        keep, count = None, torch.tensor(float(np.prod(shape)), device=zero.device)

    def clean(x: Tensor) -> Tensor:
        x = x.float()
        valid = torch.isfinite(x) if keep is None else keep
        return torch.where(valid, x, zero)  # select first: no inf - inf, no NaN gradient

    s_list, t_list = [clean(x) for x in scores_s], [clean(x) for x in scores_t]
    return torch.stack([torch.stack([(s - t).square().sum() / count for t in t_list])
                        for s in s_list])


def pairwise_attention_kl(scores_s: Sequence[Tensor], scores_t: Sequence[Tensor],
                          mask: Optional[Tensor] = None, kl: bool = True) -> Tensor:
    """The M x N matrix of ``losses.attention_kl(scores_s[i], scores_t[j], mask, kl)``,
    value for value (the loss module's own row divergence: ``masked_log_softmax``,
    ``teacher_rows``, ``row_divergence``), with each layer's masked log-softmax computed
    once instead of once per pair: M + N softmaxes instead of 2 M N, which is most of the
    cost of BERT-EMD's attention cost matrix."""
    _check_scores("pairwise_attention_kl", scores_s, scores_t)
    key_mask = row_mask = None
    if mask is not None:
        mask = mask.bool()
        key_mask, row_mask = mask[:, None, None, :], mask[:, None, :, None]

    logp_s = [masked_log_softmax(x, key_mask) for x in scores_s]
    teachers = [teacher_rows(masked_log_softmax(x, key_mask), key_mask) for x in scores_t]
    return torch.stack([torch.stack([row_divergence(ls, t, row_mask, kl) for t in teachers])
                        for ls in logp_s])


def _mean_over_workers(cost: Tensor) -> np.ndarray:
    """Detached float64 copy of C, averaged over distributed workers (same flow on all)."""
    c = cost.detach().double()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        c = c.clone()
        dist.all_reduce(c)
        c /= dist.get_world_size()
    return c.cpu().numpy()


class EmdLayerWeights(nn.Module):
    """The EMD layer weights of one criterion, with the solve-and-update step of either
    variant (module docstring): ``release`` keeps one student/teacher weight pair per object
    in ``objects`` and resets them each epoch; ``bert_emd`` shares one pair."""

    def __init__(self, n_student: int, n_teacher: int, objects: Sequence[str] = ("hidden",),
                 variant: str = "release", temperature: float = 1.0,
                 extra_softmax: bool = False):
        super().__init__()
        if n_student <= 0 or n_teacher <= 0:
            raise ValueError(f"EMD: layer counts must be > 0 ({n_student}, {n_teacher})")
        if variant not in VARIANTS:
            raise ValueError(f"--emd-variant {variant!r}: choose from {', '.join(VARIANTS)}")
        if temperature <= 0:
            raise ValueError(f"--emd-temperature must be > 0, got {temperature}")
        if variant == "release" and not objects:
            raise ValueError("EMD release variant: no objects to weight (--ild-objects)")
        if variant == "release" and (temperature != 1.0 or extra_softmax):
            raise ValueError("--emd-temperature and --emd-extra-softmax act on --emd-variant "
                             "bert_emd only (the release update has no softmax); drop them or "
                             "choose --emd-variant bert_emd")
        self.variant = variant
        self.n_student, self.n_teacher = n_student, n_teacher
        self.objects: List[str] = list(objects)
        self.groups: List[str] = self.objects if variant == "release" else [_SHARED]
        for group in self.groups:
            # frozen parameters, not buffers: fairseq saves criterion state only if it has any
            for side, n in (("student", n_student), ("teacher", n_teacher)):
                self.register_parameter(self._name(group, side), nn.Parameter(
                    torch.full((n,), 1.0 / n, dtype=torch.float64), requires_grad=False))
        # the epoch whose start last reset the weights (0: none yet), saved with them
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.temperature = temperature
        self.extra_softmax = extra_softmax
        self.last_plans: Dict[str, np.ndarray] = {}

    @staticmethod
    def _name(group: str, side: str) -> str:
        return f"{group}_{side}_weights" if group else f"{side}_weights"

    def _group(self, obj: Optional[str]) -> str:
        if self.variant == "bert_emd":
            return _SHARED
        if obj is None and len(self.groups) == 1:
            return self.groups[0]
        if obj not in self.groups:
            raise ValueError(f"EMD: no layer weights for object {obj!r} (have {self.groups})")
        return obj

    def _apply(self, fn, recurse: bool = True):
        """Device moves apply; dtype casts (--fp16, --bf16) do not: the weights stay float64."""
        exact = {name: p.detach().clone() for name, p in self._parameters.items()}
        super()._apply(fn, recurse)
        for name, p in self._parameters.items():
            if p is not None and p.dtype != torch.float64:
                p.data = exact[name].to(device=p.device)
        return self

    def weights(self, obj: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(student, teacher) weights of ``obj`` (release) or the shared ones (bert_emd)."""
        group = self._group(obj)
        return tuple(getattr(self, self._name(group, side)).detach().cpu().numpy().copy()
                     for side in ("student", "teacher"))

    def _set(self, group: str, w_s: np.ndarray, w_t: np.ndarray) -> None:
        with torch.no_grad():
            for side, w in (("student", w_s), ("teacher", w_t)):
                p = getattr(self, self._name(group, side))
                p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float64)).to(p.device))

    def reset(self) -> None:
        """Every weight back to uniform."""
        for group in self.groups:
            self._set(group, np.full(self.n_student, 1.0 / self.n_student),
                      np.full(self.n_teacher, 1.0 / self.n_teacher))

    def begin_epoch(self, epoch: int) -> bool:
        """Called before each training forward with the task's current epoch: on the first
        forward of a new epoch the release variant resets its weights to uniform (bert_emd
        keeps them). Returns whether this call reset them."""
        if int(self.epoch) == int(epoch):
            return False
        self.epoch.fill_(int(epoch))
        if self.variant != "release":
            return False
        self.reset()
        return True

    def log_values(self, scale: float = 1.0) -> Dict[str, float]:
        """``emd_ws<i>`` / ``emd_wt<j>`` (bert_emd) or ``emd_<object>_ws<i>`` ... (release)
        times ``scale`` (the criterion logs per-sentence sums)."""
        out: Dict[str, float] = {}
        for group in self.groups:
            w_s, w_t = self.weights(group or None)
            tag = f"emd_{group}_" if group else "emd_"
            out.update({f"{tag}ws{i}": float(w) * scale for i, w in enumerate(w_s)})
            out.update({f"{tag}wt{j}": float(w) * scale for j, w in enumerate(w_t)})
        return out

    def forward(self, costs: Mapping[str, Tensor], update: bool) -> Dict[str, Tensor]:
        """EMD loss ``sum F * C`` per object; with ``update`` (training) the variant's weight
        update follows (release: per object; bert_emd: the mean of what each object proposes,
        then, with ``extra_softmax``, its softmax)."""
        out: Dict[str, Tensor] = {}
        proposals = []
        for name, cost in costs.items():
            group = self._group(name)
            w_s, w_t = self.weights(group or None)
            d = _mean_over_workers(cost)
            plan = transport_plan(d, w_s, w_t)
            self.last_plans[name] = plan
            out[name] = (torch.from_numpy(plan).to(cost) * cost).sum()
            if not (update and np.all(np.isfinite(d))):
                continue
            if self.variant == "release":
                self._set(group, *release_weights(plan, d, w_s, w_t))
            else:
                proposals.append(cost_attention(plan, d, w_s, w_t, self.temperature))
        if proposals:
            new_s = np.mean([p[0] for p in proposals], axis=0)
            new_t = np.mean([p[1] for p in proposals], axis=0)
            if self.extra_softmax:
                new_s, new_t = _softmax(new_s), _softmax(new_t)
            self._set(_SHARED, new_s, new_t)
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Checkpoints from before ``emd.epoch`` load (as 'no reset yet'); a checkpoint of
        the other variant is refused with the option that loads it."""
        if prefix + "epoch" not in state_dict and any(k.startswith(prefix) for k in state_dict):
            state_dict[prefix + "epoch"] = torch.zeros((), dtype=torch.long)
        shared = prefix + "student_weights" in state_dict
        if self.variant == "release" and shared:
            raise ValueError("this checkpoint holds BERT-EMD weights shared by all objects: "
                             "resume it with --emd-variant bert_emd")
        if self.variant == "bert_emd" and not shared and any(
                k.startswith(prefix) and k.endswith("_student_weights") for k in state_dict):
            raise ValueError("this checkpoint holds per-object EMD weights: resume it with "
                             "--emd-variant release")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
