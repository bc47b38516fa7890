"""FLOP counts of the benchmark's variants: plain integer arithmetic, no torch.

The measure is the speed issue's "useful FLOPs": real tokens x (teacher forward + 3 x student
forward), at ``2 x (4 h^2 + 2 h f) + 4 L h`` FLOPs per token per encoder layer, where

* ``4 h^2`` multiply-adds are the Q, K, V and output projections, ``2 h f`` the two
  feed-forward matrices (``f`` the feed-forward width), x 2 FLOPs per multiply-add;
* ``4 L h`` are the attention products: ``Q K^T`` and ``softmax x V``, ``L h`` multiply-adds
  each per token, ``L`` the number of keys a token attends to;
* a student's backward pass counts as two forwards, so a training student is ``3 x`` its
  forward; a teacher runs forward only.

Choices this module fixes (the issue's definition leaves them open):

* **useful** counts real tokens only, and ``L`` is the token's own example length (the real
  keys it attends to): padding is excluded twice over, as rows and as keys. **executed**
  counts the batch as it was computed: ``batch x width`` token rows and ``L = width``
  (every padded position, as a padded matmul runs it). Useful / executed is then the share
  of the work that was not padding.
* embeddings, the pooler and head, LayerNorm, GELU, softmax, dropout, the loss arithmetic
  (relation matrices, KL) and the optimizer are not counted: the issue's definition covers
  the encoder matmuls, the work a GEMM peak bounds.
* each variant names its passes in forward equivalents (:data:`PASSES`). Every CR-ILD step
  counts as the issue defines it, teacher forward + 3 x student forward, also when it makes
  the consistency term's clean student forward: that pass is counted as overhead, as the
  loss arithmetic is, so a step's share of the peak drops by what the clean pass costs
  (conservative, and the same measure for the steps with and without it). Cached KD counts
  no teacher (it reads stored logits); the lone clean forward counts its one forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple


@dataclass(frozen=True)
class EncoderShape:
    """What the count needs of an encoder: layers, hidden width h, feed-forward width f."""

    layers: int
    hidden: int
    ffn: int


@dataclass(frozen=True)
class Passes:
    """A variant's encoder passes in forward equivalents (a training student is 3)."""

    teacher: int
    student: int


# forward equivalents per variant; variants absent here (the Adam update) get no FLOP count
PASSES: Dict[str, Passes] = {
    "teacher_fwd": Passes(1, 0),
    "encoder_gemms": Passes(1, 0),  # the teacher forward's matmuls alone (benchmark_gemm.py)
    "student_fwd_bwd": Passes(0, 3),
    "student_clean_fwd": Passes(0, 1),
    "finetune_step": Passes(0, 3),
    "kd_step": Passes(1, 3),
    "kd_cached_step": Passes(0, 3),
    "cr_ild_step": Passes(1, 3),  # its clean forward is overhead (see above)
    "cr_ild_no_clean_step": Passes(1, 3),
    "cr_ild_fresh_step": Passes(1, 3),
    "cr_ild_pad128_step": Passes(1, 3),
    "cr_ild_unshared_step": Passes(1, 3),
    "cr_ild_full_layers_step": Passes(1, 3),
    "finetune_hash_dropout_step": Passes(0, 3),
    "cr_ild_hash_dropout_step": Passes(1, 3),
    "cr_ild_fresh_hash_dropout_step": Passes(1, 3),
    "cr_ild_cpp_kl_step": Passes(1, 3),
    "cr_ild_cpp_kl_hash_dropout_step": Passes(1, 3),
    "cr_ild_fresh_cpp_kl_hash_dropout_step": Passes(1, 3),
}


def token_layer_flops(hidden: int, ffn: int, keys: int) -> int:
    """FLOPs of one token through one encoder layer attending to ``keys`` positions."""
    return 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * keys * hidden


def forward_flops(shape: EncoderShape, lengths: Iterable[int],
                  width: Optional[int] = None) -> int:
    """One forward pass of ``shape`` over one batch.

    ``lengths``: the real length of each example. Without ``width``: the useful count (each
    example's real tokens attending to its real tokens). With ``width`` (the padded batch
    length): the executed count (every example ``width`` tokens attending to ``width``)."""
    total = 0
    for n in lengths:
        n = int(width) if width is not None else int(n)
        total += n * token_layer_flops(shape.hidden, shape.ffn, n)
    return total * shape.layers


def batch_flops(passes: Passes, teacher: EncoderShape, student: EncoderShape,
                lengths: Sequence[int], width: Optional[int] = None) -> int:
    """A variant's FLOPs on one batch (useful without ``width``, executed with it)."""
    return (passes.teacher * forward_flops(teacher, lengths, width)
            + passes.student * forward_flops(student, lengths, width))


def variant_flops(variant: str, teacher: EncoderShape, student: EncoderShape,
                  batches: Sequence[Tuple[Sequence[int], int]]) -> Optional[Dict[str, int]]:
    """{useful, executed} FLOPs of one pass over ``batches`` ((lengths, width) each), or None
    for a variant without a count."""
    passes = PASSES.get(variant)
    if passes is None:
        return None
    return {"useful": sum(batch_flops(passes, teacher, student, lengths)
                          for lengths, _ in batches),
            "executed": sum(batch_flops(passes, teacher, student, lengths, width)
                            for lengths, width in batches)}


def gemm_flops(n: int) -> int:
    """FLOPs of an n x n by n x n matrix product (n^3 multiply-adds)."""
    return 2 * n ** 3
