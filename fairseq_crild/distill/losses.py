"""Pure tensor functions of the CR-ILD method (Ko et al., EACL 2023) and its baselines.

Nothing here imports fairseq: the criterions compose these functions, and the tests check
them on tiny hand-computed tensors.

Conventions
-----------
* ``mask`` is a bool tensor (B, L), True at REAL tokens. fairseq models (and this plugin's
  ``extra["padding_mask"]``) use the opposite convention (True at padding): pass
  ``~padding_mask``. ``mask=None`` means every position is real.
* Every loss computes in float32 (inputs may be fp16/bf16) and returns a scalar float32
  tensor, reduced as the CR-ILD paper's method reduces it, so that a criterion can multiply it by
  a weight and add it to others.
* Argument order is always (student / prediction, teacher / target).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PAD_MASK_MODES",
    "attention_kl",
    "consistency_loss",
    "consistency_rampup",
    "ema_update",
    "hidden_mse",
    "hidden_state_pairs",
    "kd_loss",
    "kd_regression_loss",
    "last_layer_map",
    "mixup_partner",
    "parse_layer_map",
    "pkd_cls_loss",
    "qkv_relation_kl",
    "relation_kl",
    "sample_mixup_lambda",
    "uniform_layer_map",
]


#: Padding treatment of the ILD losses: "exclude" (ours: padded positions do not count) or
#: "include" (the authors' code, whose batches are all padded to 128: hidden MSE and
#: attention CE average over all B x L positions, the relation losses use the full L x L
#: grid, padded rows and keys included).
PAD_MASK_MODES = ("exclude", "include")

# A finite "minus infinity" for masked softmax inputs: exp() of it underflows to exactly 0,
# yet a row that is fully masked stays finite (uniform) instead of producing NaN.
_NEG = torch.finfo(torch.float32).min


# --------------------------------------------------------------------------- helpers


def _check_mask(mask: Tensor | None, batch: int, length: int, what: str) -> Tensor | None:
    if mask is None:
        return None
    if mask.shape != (batch, length):
        raise ValueError(
            f"{what}: mask must have shape (B, L) = ({batch}, {length}), got {tuple(mask.shape)}"
        )
    return mask.bool()


def _check_mode(pad_mask_mode: str, what: str) -> None:
    if pad_mask_mode not in PAD_MASK_MODES:
        raise ValueError(
            f"{what}: pad_mask_mode must be one of {PAD_MASK_MODES}, got {pad_mask_mode!r}"
        )


def _row_divergence(
    logits_s: Tensor,
    logits_t: Tensor,
    key_mask: Tensor | None,
    row_mask: Tensor | None,
    kl: bool,
) -> Tensor:
    """Mean over (unmasked) rows of KL(softmax(t) || softmax(s)) or cross-entropy H(t, s).

    ``key_mask`` / ``row_mask`` broadcast against the (..., Lq, Lk) logits (True = counts).
    Masked keys are removed from both softmaxes. Terms where the teacher probability is 0
    (masked keys, or -inf scores the model already put on padded keys) are dropped before
    any product, so 0 * (-inf) never appears, neither in the value nor in the gradient.
    """
    s = logits_s.float()
    t = logits_t.float()
    teacher = teacher_rows(masked_log_softmax(t, key_mask), key_mask)
    return row_divergence(masked_log_softmax(s, key_mask), teacher, row_mask, kl)


def masked_log_softmax(logits: Tensor, key_mask: Tensor | None) -> Tensor:
    """float32 log-softmax over the last dim with masked keys (False in ``key_mask``) at a
    finite -3.4e38 (probability exactly 0): the student or teacher side of
    :func:`row_divergence`."""
    x = logits.float()
    if key_mask is not None:
        x = x.masked_fill(~key_mask, _NEG)
    return F.log_softmax(x, dim=-1)


def teacher_rows(logp_t: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The teacher side of :func:`row_divergence`, computed once per teacher: ``(valid,
    log p_t, p_t)`` with terms where p_t is 0 or the key is masked set to 0 (so that
    0 * (-inf) never appears, neither in the value nor in the gradient)."""
    p_t = logp_t.exp()
    valid = p_t > 0
    if key_mask is not None:
        valid = valid & key_mask
    zero = torch.zeros((), dtype=logp_t.dtype, device=logp_t.device)
    return valid, torch.where(valid, logp_t, zero), torch.where(valid, p_t, zero)


def row_divergence(logp_s: Tensor, teacher: tuple[Tensor, Tensor, Tensor],
                   row_mask: Tensor | None, kl: bool) -> Tensor:
    """Mean over (unmasked) rows of KL(p_t || p_s) (``kl``) or the cross-entropy H(t, s),
    from the student's :func:`masked_log_softmax` and the teacher's :func:`teacher_rows`
    (``row_mask`` broadcasts against the (..., Lq, Lk) log-probabilities, True = counts)."""
    valid, logp_t, p_t = teacher
    zero = torch.zeros((), dtype=logp_s.dtype, device=logp_s.device)
    logp_s = torch.where(valid, logp_s, zero)
    if kl:
        per_row = (p_t * (logp_t - logp_s)).sum(dim=-1)
    else:
        per_row = -(p_t * logp_s).sum(dim=-1)
    return _mean_over_rows(per_row, row_mask)


def _mean_over_rows(per_row: Tensor, row_mask: Tensor | None) -> Tensor:
    if row_mask is None:
        return per_row.mean()
    rows = row_mask[..., 0].expand_as(per_row)  # (..., Lq, 1) -> (..., Lq)
    per_row = torch.where(rows, per_row, torch.zeros((), dtype=per_row.dtype,
                                                     device=per_row.device))
    return per_row.sum() / rows.sum().clamp(min=1)


# --------------------------------------------------------------------------- prediction layer


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Soft cross-entropy to the teacher at temperature T, times T^2 (Hinton et al.).

    ``-T^2 * mean_b sum_c softmax(z_t/T)_c * log_softmax(z_s/T)_c``; logits (..., C), the
    mean runs over all leading dimensions. It is a cross-entropy, not a KL: its minimum is
    the teacher's entropy, not 0 (same gradient). T^2 keeps gradient scale T-independent.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    t = float(temperature)
    p_t = F.softmax(teacher_logits.float() / t, dim=-1)
    logp_s = F.log_softmax(student_logits.float() / t, dim=-1)
    return -(t * t) * (p_t * logp_s).sum(dim=-1).mean()


def kd_regression_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KD for regression (STS-B): ``MSE(z_s/T, z_t/T)``, mean over all elements.

    Shapes must match exactly (a (B, 1) vs (B,) mix would broadcast to (B, B) silently).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"kd_regression_loss: student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)} differ in shape"
        )
    if temperature <= 0:
        raise ValueError(f"kd_regression_loss: temperature must be > 0, got {temperature}")
    t = float(temperature)
    return F.mse_loss(student.float() / t, teacher.float() / t)


# --------------------------------------------------------------------------- intermediate layers


def hidden_mse(h_s: Tensor, h_t: Tensor, mask: Tensor | None = None,
               pad_mask_mode: str = "exclude") -> Tensor:
    """MSE between hidden states (B, L, D) over real tokens only.

    ``sum_{real (b, l)} sum_d (h_s - h_t)^2 / (num_real_tokens * D)``: padding neither adds
    to the sum nor to the count, so padded positions (whatever they hold, even inf) leave
    both value and gradient unchanged. ``pad_mask_mode="include"`` is the authors' code on
    batches padded to 128: the mean over all B x L x D entries, padded positions included
    (``mask`` is then ignored). The caller applies the projection W (fit_dense).
    """
    if h_s.shape != h_t.shape:
        raise ValueError(
            f"hidden_mse: student {tuple(h_s.shape)} and teacher {tuple(h_t.shape)} differ in "
            "shape; project the student to the teacher width first"
        )
    if h_s.dim() != 3:
        raise ValueError(f"hidden_mse: expected (B, L, D) tensors, got {tuple(h_s.shape)}")
    _check_mode(pad_mask_mode, "hidden_mse")
    batch, length, dim = h_s.shape
    mask = _check_mask(mask, batch, length, "hidden_mse")
    diff = h_s.float() - h_t.float()
    if mask is None or pad_mask_mode == "include":
        return diff.square().mean()
    # Select before squaring so huge padded values cannot overflow or leak NaN gradients.
    diff = torch.where(mask.unsqueeze(-1), diff, torch.zeros((), device=diff.device))
    return diff.square().sum() / (mask.sum().clamp(min=1) * dim)


def attention_kl(
    scores_s: Tensor, scores_t: Tensor, mask: Tensor | None = None, kl: bool = True,
    pad_mask_mode: str = "exclude",
) -> Tensor:
    """Attention-distribution loss between pre-softmax scores (B, H, L, L).

    Default ``kl=True``: true KL, ``sum_key p_t (log p_t - log p_s)``, which is 0 for
    identical inputs and has the same gradient in the student as the method's cross-entropy.
    ``kl=False``: the method's literal ``-sum_key p_t log p_s`` (differs by the teacher
    entropy, a constant in the student). Either is averaged over (b, head, REAL query);
    padded keys are removed from both softmaxes (scores there, even -inf, are ignored).
    ``pad_mask_mode="include"`` (the authors' code on batches padded to 128): padded keys
    still leave the softmaxes (their scores carry the attention mask), but the average runs
    over every (b, head, query) row, padded queries included.
    """
    _check_mode(pad_mask_mode, "attention_kl")
    if scores_s.dim() != 4 or scores_t.dim() != 4:
        raise ValueError(
            "attention_kl: expected (B, H, L, L) scores, got "
            f"{tuple(scores_s.shape)} and {tuple(scores_t.shape)}"
        )
    if scores_s.shape[1] != scores_t.shape[1]:
        raise ValueError(
            f"attention_kl: student has {scores_s.shape[1]} heads and teacher "
            f"{scores_t.shape[1]}; attention KL compares head by head and needs equal head "
            "counts (use the Q/K/V relation losses, which re-split into R relation heads)"
        )
    if scores_s.shape != scores_t.shape:
        raise ValueError(
            f"attention_kl: student scores {tuple(scores_s.shape)} and teacher scores "
            f"{tuple(scores_t.shape)} differ in shape"
        )
    batch, _, len_q, len_k = scores_s.shape
    if mask is None:
        return _row_divergence(scores_s, scores_t, None, None, kl)
    if len_q != len_k:
        raise ValueError("attention_kl: a (B, L) mask needs self-attention scores (Lq == Lk)")
    mask = _check_mask(mask, batch, len_k, "attention_kl")
    rows = None if pad_mask_mode == "include" else mask[:, None, :, None]
    return _row_divergence(scores_s, scores_t, mask[:, None, None, :], rows, kl)


def _self_relations(x: Tensor, num_relation_heads: int, who: str,
                    keep: Tensor | None = None) -> Tensor:
    """(B, L, D) -> (B, R, L, L) scaled dot products X_r X_r^T / sqrt(D / R); positions
    where ``keep`` (B, L) is False are zeroed first (their relations are then finite)."""
    if x.dim() != 3:
        raise ValueError(f"relation_kl: {who} input must be (B, L, D), got {tuple(x.shape)}")
    if keep is not None:
        x = torch.where(keep[:, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    batch, length, dim = x.shape
    if num_relation_heads <= 0 or dim % num_relation_heads != 0:
        raise ValueError(
            f"relation_kl: {who} width {dim} is not divisible by num_relation_heads="
            f"{num_relation_heads}"
        )
    d_r = dim // num_relation_heads
    xr = x.float().reshape(batch, length, num_relation_heads, d_r).transpose(1, 2)
    # the scale on one (B, R, L, d_r) operand: one pass fewer over the (B, R, L, L) product
    return torch.matmul(xr * (1.0 / math.sqrt(d_r)), xr.transpose(-1, -2))


def relation_log_probs(x: Tensor, num_relation_heads: int, keep: Tensor,
                       who: str = "input") -> Tensor:
    """float32 (B, R, L, L) log-softmax over the keys of the self-relations of ``x`` (B, L,
    D), positions where ``keep`` (B, L) is False zeroed first and their keys at a finite
    -3.4e38 (probability exactly 0): one side of :func:`relation_kl` with a mask."""
    rel = _self_relations(x, num_relation_heads, who, keep)
    return F.log_softmax(torch.where(keep[:, None, None, :], rel.float(), _NEG), dim=-1)


def relation_kl_from_log_probs(logp_s: Tensor, logp_t: Tensor, keep: Tensor) -> Tensor:
    """KL(p_t || p_s) from both sides' :func:`relation_log_probs`, averaged over the rows
    of real queries (``keep`` (B, L)): what :func:`relation_kl` computes with a mask."""
    p_t = logp_t.exp()
    per_row = (p_t * (logp_t - logp_s)).sum(dim=-1)
    return _mean_over_rows(per_row, keep[:, None, :, None])


RelationLogProbs = Callable[[Tensor, int, Tensor, str], Tensor]
RelationDivergence = Callable[[Tensor, Tensor, Tensor], Tensor]


def relation_kl(
    x_s: Tensor,
    x_t: Tensor,
    mask: Tensor | None = None,
    num_relation_heads: int = 12,
    pad_mask_mode: str = "exclude",
    log_probs: RelationLogProbs | None = None,
    divergence: RelationDivergence | None = None,
) -> Tensor:
    """MiniLMv2 self-relation KL for one of Q, K or V (B, L, D_s) vs (B, L, D_t).

    Each side is split into the same R relation heads (d_r = D / R, its own per side), so
    widths and attention-head counts may differ. Loss: KL(softmax(rel_t) || softmax(rel_s))
    over keys, averaged over (b, r, query row). ``pad_mask_mode="exclude"`` (default)
    removes padded keys from the softmaxes and padded rows from the average;
    ``"include"`` reproduces the authors' code: no mask, all L x L rows and keys count.

    ``log_probs`` (masked case only; default :func:`relation_log_probs`) computes each
    side's log-probabilities: a caller distilling the same features in several terms passes
    a memo of them (:class:`fairseq_crild.criterions.ild_distance.RelationMemo`), with the
    same values as computing them afresh. ``divergence`` (masked case only; default
    :func:`relation_kl_from_log_probs`) computes the KL from both sides (the fused C++ one
    of :mod:`fairseq_crild.distill.relation_kernel`, say).
    """
    _check_mode(pad_mask_mode, "relation_kl")
    if x_s.shape[:2] != x_t.shape[:2]:
        raise ValueError(
            f"relation_kl: student {tuple(x_s.shape)} and teacher {tuple(x_t.shape)} differ in "
            "batch size or length"
        )
    keep = None
    if pad_mask_mode == "exclude" and mask is not None and x_s.dim() == 3:
        keep = _check_mask(mask, x_s.shape[0], x_s.shape[1], "relation_kl")
    if keep is None:
        rel_s = _self_relations(x_s, num_relation_heads, "student")
        rel_t = _self_relations(x_t, num_relation_heads, "teacher")
        return _row_divergence(rel_s, rel_t, None, None, kl=True)
    # padded positions zeroed before the products (they are masked out of the loss anyway):
    # every relation is finite, so the divergence needs none of _row_divergence's guards
    # against 0 * (-inf): same value in about half the passes over the (B, R, L, L) tensors
    side = log_probs or relation_log_probs
    kl = divergence or relation_kl_from_log_probs
    return kl(side(x_s, num_relation_heads, keep, "student"),
              side(x_t, num_relation_heads, keep, "teacher"), keep)


def qkv_relation_kl(
    qkv_s: Mapping[str, Tensor],
    qkv_t: Mapping[str, Tensor],
    mask: Tensor | None = None,
    num_relation_heads: int = 12,
    pad_mask_mode: str = "exclude",
    log_probs: RelationLogProbs | None = None,
    divergence: RelationDivergence | None = None,
) -> Tensor:
    """Sum of :func:`relation_kl` over the Q/K/V entries ("q", "k", "v") given
    (``log_probs``, ``divergence``: as :func:`relation_kl`'s).

    Both dicts must hold the same keys (a subset of q/k/v), so that a request mismatch
    between teacher and student fails loudly instead of silently dropping a term.
    """
    keys_s, keys_t = set(qkv_s), set(qkv_t)
    if keys_s != keys_t:
        raise ValueError(
            f"qkv_relation_kl: student has {sorted(keys_s)} and teacher {sorted(keys_t)}"
        )
    unknown = keys_s - {"q", "k", "v"}
    if unknown:
        raise ValueError(f"qkv_relation_kl: unknown keys {sorted(unknown)} (expected q, k, v)")
    if not keys_s:
        raise ValueError("qkv_relation_kl: no Q/K/V tensors given")
    return sum(
        relation_kl(qkv_s[k], qkv_t[k], mask, num_relation_heads, pad_mask_mode, log_probs,
                    divergence)
        for k in ("q", "k", "v")
        if k in keys_s
    )


def pkd_cls_loss(cls_s: Tensor, cls_t: Tensor, feature_mean: bool = False,
                 num_layers: int = 1) -> Tensor:
    """PKD "patient" loss on L2-normalised [CLS] states (..., D).

    Default: the PKD paper's formula, ``mean_b || h_s/|h_s| - h_t/|h_t| ||_2^2`` (sum over
    features, mean over all leading dims, e.g. batch and layers). ``feature_mean=True`` also
    averages over features (the PKD reference code's ``F.mse_loss``), i.e. divides by D:
    on (B, layers, D) inputs that is the CR-ILD authors' PKD term, the mean over batch x
    layers x hidden size. ``num_layers`` divides the result: a criterion that calls this once
    per mapped layer on (B, D) inputs and sums over its ``num_layers`` layers then gets the
    mean over layers (``cr_ild``: ``feature_mean=True, num_layers=<mapped layers>``).
    The caller projects widths first.
    """
    if cls_s.shape != cls_t.shape:
        raise ValueError(
            f"pkd_cls_loss: student {tuple(cls_s.shape)} and teacher {tuple(cls_t.shape)} differ "
            "in shape; project the student to the teacher width first"
        )
    if int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"pkd_cls_loss: num_layers must be an integer >= 1, got {num_layers}")
    n_s = F.normalize(cls_s.float(), p=2.0, dim=-1)
    n_t = F.normalize(cls_t.float(), p=2.0, dim=-1)
    sq = (n_s - n_t).square()
    return (sq.mean() if feature_mean else sq.sum(dim=-1).mean()) / num_layers


# --------------------------------------------------------------------------- layer maps


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """U-ILD (PKD/TinyBERT): student layer i <- teacher layer (i + 1) * k - 1, k = N_t / N_s."""
    if n_student <= 0 or n_teacher <= 0:
        raise ValueError(f"uniform layer map: layer counts must be > 0 ({n_student}, {n_teacher})")
    if n_teacher % n_student != 0:
        raise ValueError(
            f"uniform layer map: teacher layers ({n_teacher}) are not a multiple of student "
            f"layers ({n_student}); give an explicit map such as '0:1,1:3'"
        )
    k = n_teacher // n_student
    return [(i, (i + 1) * k - 1) for i in range(n_student)]


def hidden_state_pairs(
    layer_pairs: Iterable[tuple[int, int]], embeddings: bool
) -> list[tuple[int, int]]:
    """(student, teacher) indices into the hidden-state lists of a layer map.

    Index 0 is the embedding output and i + 1 the output of layer i. ``embeddings=True``
    puts the pair (0, 0) first: TinyBERT's uniform map matches the embedding outputs too,
    so 3 -> 6 layers give (0, 0), (1, 2), (2, 4), (3, 6).
    """
    pairs = [(s + 1, t + 1) for s, t in layer_pairs]
    return ([(0, 0)] if embeddings else []) + pairs


def last_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """L-ILD: the student's last layer <- the teacher's last layer (0-based)."""
    if n_student <= 0 or n_teacher <= 0:
        raise ValueError(f"last layer map: layer counts must be > 0 ({n_student}, {n_teacher})")
    return [(n_student - 1, n_teacher - 1)]


def parse_layer_map(spec: str, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Parse a layer-map option: "last", "uniform" or explicit "s:t,s:t" (0-based layers).

    Returns (student_layer, teacher_layer) pairs in the order given; errors name the value.
    """
    text = spec.strip().lower()
    if text == "last":
        return last_layer_map(n_student, n_teacher)
    if text == "uniform":
        return uniform_layer_map(n_student, n_teacher)
    if not text:
        raise ValueError("layer map '': expected 'last', 'uniform' or pairs like '0:1,1:3'")
    pairs: list[tuple[int, int]] = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            s, t = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(
                f"layer map {spec!r}: bad entry {item.strip()!r}; expected 'last', 'uniform' or "
                "comma-separated student:teacher pairs of 0-based layers, e.g. '0:1,1:3,2:5'"
            ) from None
        if not 0 <= s < n_student:
            raise ValueError(
                f"layer map {spec!r}: student layer {s} out of range 0..{n_student - 1}"
            )
        if not 0 <= t < n_teacher:
            raise ValueError(
                f"layer map {spec!r}: teacher layer {t} out of range 0..{n_teacher - 1}"
            )
        if (s, t) in pairs:
            raise ValueError(f"layer map {spec!r}: pair {s}:{t} given twice")
        pairs.append((s, t))
    return pairs


# --------------------------------------------------------------------------- mixup


def sample_mixup_lambda(
    alpha: float = 1.0, generator: torch.Generator | np.random.Generator | None = None
) -> float:
    """lam ~ Beta(alpha, alpha), folded to lam = max(lam, 1 - lam) so the example dominates.

    ``generator``: a ``numpy.random.Generator``, a ``torch.Generator`` (inverse-CDF
    sampling from one uniform draw), or None (numpy's global state, which fairseq's
    ``data_utils.numpy_seed`` makes reproducible). ``alpha <= 0`` disables mixup (lam = 1),
    as in the original mixup code.
    """
    if alpha <= 0:
        return 1.0
    if isinstance(generator, torch.Generator):
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if alpha == 1.0:
            lam = u
        else:
            from scipy.special import betaincinv

            lam = float(betaincinv(alpha, alpha, u))
    elif isinstance(generator, np.random.Generator):
        lam = float(generator.beta(alpha, alpha))
    elif generator is None:
        lam = float(np.random.beta(alpha, alpha))
    else:
        raise TypeError(
            f"sample_mixup_lambda: generator must be a torch or numpy Generator, got "
            f"{type(generator).__name__}"
        )
    return max(lam, 1.0 - lam)


def mixup_partner(
    batch_size: int,
    mode: str = "reverse",
    generator: torch.Generator | np.random.Generator | None = None,
) -> Tensor:
    """Partner index j of each example i: "reverse" (j = B - 1 - i, the authors' choice) or
    "random" (a permutation; same in expectation). With an odd B the middle example of
    "reverse" is its own partner (it stays clean)."""
    if batch_size <= 0:
        raise ValueError(f"mixup_partner: batch_size must be > 0, got {batch_size}")
    if mode == "reverse":
        return torch.arange(batch_size - 1, -1, -1, dtype=torch.long)
    if mode == "random":
        if isinstance(generator, np.random.Generator):
            return torch.from_numpy(generator.permutation(batch_size)).long()
        if generator is None or isinstance(generator, torch.Generator):
            return torch.randperm(batch_size, generator=generator)
        raise TypeError(
            f"mixup_partner: generator must be a torch or numpy Generator, got "
            f"{type(generator).__name__}"
        )
    raise ValueError(f"mixup_partner: mode must be 'reverse' or 'random', got {mode!r}")


# --------------------------------------------------------------------------- consistency


def _gather_batch(
    x: Tensor | Mapping[str, Tensor], partner: Tensor,
    gather: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor | Mapping[str, Tensor]:
    if isinstance(x, Tensor):
        index = partner.to(device=x.device, dtype=torch.long)
        return x.index_select(0, index) if gather is None else gather(x, index)
    return {k: _gather_batch(v, partner, gather) for k, v in x.items()}


def _distance(
    distance_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    a: Tensor | Mapping[str, Tensor],
    b: Tensor | Mapping[str, Tensor],
    mask,
) -> Tensor:
    if isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise TypeError("consistency_loss: mixed is a tensor but clean is a dict")
        return distance_fn(a, b, mask)
    if isinstance(b, Tensor) or set(a) != set(b):
        raise ValueError("consistency_loss: mixed and clean must hold the same keys")
    if not a:
        raise ValueError("consistency_loss: no features given")
    return sum(_distance(distance_fn, a[k], b[k], mask) for k in a)


def consistency_loss(
    distance_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    mixed: Tensor | Mapping[str, Tensor],
    clean: Tensor | Mapping[str, Tensor],
    partner: Tensor,
    lam: float,
    mask_mixed: Tensor | None = None,
    gather: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """CR-ILD consistency: ``lam * l(mixed, clean) + (1 - lam) * l(mixed, clean[partner])``.

    ``distance_fn(pred, target, mask)`` is an ILD distance (e.g. :func:`hidden_mse`,
    :func:`attention_kl`; use ``functools.partial`` for options). ``mixed``: the student's
    features on the mixed input; ``clean``: its features on the clean batch (computed
    without gradient, maybe by an EMA copy), both with the batch on dim 0, either tensors or
    dicts of tensors with the same keys (e.g. per layer; distances are summed over keys).
    ``mask_mixed`` (True = real) is the mixed input's mask, the union of both examples'
    tokens, and is used for both terms. lam == 1 computes only the first term.
    ``gather(x, partner)`` (default ``x.index_select(0, partner)``) picks each tensor's
    partner rows (a memo of the distance's intermediate results can record them).
    """
    first = _distance(distance_fn, mixed, clean, mask_mixed)
    if lam == 1.0:
        return lam * first
    second = _distance(distance_fn, mixed, _gather_batch(clean, partner, gather), mask_mixed)
    return lam * first + (1.0 - lam) * second


def consistency_rampup(epoch: float, num_epochs: float, weight: float = 0.1) -> float:
    """Linear ramp of the consistency weight: ``weight * epoch / num_epochs``, in [0, weight].

    Epochs count from 0 (the first epoch has no consistency), as in the authors' code;
    fairseq's ``epoch`` starts at 1, so pass ``epoch - 1``. Fractional epochs are allowed.
    """
    if num_epochs <= 0:
        raise ValueError(f"consistency_rampup: num_epochs must be > 0, got {num_epochs}")
    if weight < 0:
        raise ValueError(f"consistency_rampup: weight must be >= 0, got {weight}")
    return float(min(max(weight * epoch / num_epochs, 0.0), weight))


# --------------------------------------------------------------------------- EMA


@torch.no_grad()
def ema_update(
    ema_params: Iterable[Tensor], params: Iterable[Tensor], decay: float = 0.999
) -> None:
    """In place: ``ema = decay * ema + (1 - decay) * param`` (floating tensors).

    Non-floating tensors (integer buffers) are copied. Used for the optional EMA teacher of
    the consistency targets.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_update: decay must be in [0, 1], got {decay}")
    ema_list, param_list = list(ema_params), list(params)
    if len(ema_list) != len(param_list):
        raise ValueError(
            f"ema_update: {len(ema_list)} EMA tensors but {len(param_list)} parameters"
        )
    for ema, p in zip(ema_list, param_list):
        if ema.shape != p.shape:
            raise ValueError(f"ema_update: shape mismatch {tuple(ema.shape)} vs {tuple(p.shape)}")
        if ema.is_floating_point():
            ema.mul_(decay).add_(p.detach().to(dtype=ema.dtype, device=ema.device), alpha=1 - decay)
        else:
            ema.copy_(p)
