"""What a distillation loss asks an encoder for, and how it asks (the "adaptor" contract).

Criterions never reach into model internals: they build a :class:`FeatureRequest` and read
the answers from the ``extra`` dict the model returns. Any encoder (BERT, RoBERTa, ...) that
answers the same request works with every criterion. Nothing is kept unless requested, so a
plain forward costs no extra memory.

How a mixup input is formed (:func:`mix_embeddings`, :func:`mix_padding_mask`) is defined
here, where the encoders apply it; the criterions only draw ``lam`` and the partners
(``sample_mixup_lambda`` and ``mixup_partner`` of the losses module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Tuple

import torch


def mix_embeddings(emb: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * emb + (1 - lam) * emb[partner]`` along the batch dim (keeps emb's dtype).

    lam == 1 returns ``emb`` itself, bit for bit (and skips the partner gather).
    """
    if lam == 1.0:
        return emb
    partner = partner.to(device=emb.device, dtype=torch.long)
    return lam * emb + (1.0 - lam) * emb.index_select(0, partner)


def mix_padding_mask(mask: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Real-token mask of the mixed input: real where either example is real (a union).

    ``mask`` is True at REAL tokens; for a fairseq padding mask use
    ``~mix_padding_mask(~padding_mask, partner)``.
    """
    mask = mask.bool()
    return mask | mask.index_select(0, partner.to(device=mask.device, dtype=torch.long))


@dataclass(frozen=True)
class MixupSpec:
    """Mix every example's embedding output with a partner's: lam * e_i + (1 - lam) * e_j.

    ``partner[i] = j``. Applied after the embedding LayerNorm and dropout; the padding mask
    becomes the union of both examples' real tokens. Teacher and student get the same spec.
    """

    lam: float
    partner: torch.Tensor

    def apply(self, x: torch.Tensor,
              padding_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The mixed embedding output and its fairseq padding mask (True = padding): padding
        only where both examples are padded (:func:`mix_embeddings`, :func:`mix_padding_mask`)."""
        mixed = mix_embeddings(x, self.partner, float(self.lam))
        return mixed, ~mix_padding_mask(~padding_mask, self.partner)


@dataclass(frozen=True)
class FeatureRequest:
    """Intermediate features a criterion needs from one forward pass.

    Layer indices are 0-based transformer layers. Answers appear in the model's ``extra``:
    ``hidden_states`` (list: index 0 = embedding output, index i + 1 = output of layer i),
    ``attention_scores`` ({layer: (B, H, T, T) pre-softmax scores, padded keys at the dtype's
    lowest value}),
    ``qkv`` ({layer: {"q", "k", "v": (B, T, D)}}), ``pooled_output`` (B, D) and
    ``padding_mask`` (B, T) True at padding (after mixup: padding in both examples).

    ``stop_early``: compute no more than the requested features need (without hidden states,
    pooled output or head: the layers up to the last one with requested scores or Q/K/V, and
    of that one only its Q/K/V projections when no scores are requested); the model then
    returns None in place of the last hidden states. The random draws of the dropouts it
    skips are still made on the CPU, so the random stream (and any later pass's dropout) is
    what the full forward leaves; elsewhere a training forward with dropout runs every layer.
    """

    hidden_states: bool = False
    attention_scores: FrozenSet[int] = field(default_factory=frozenset)
    qkv: FrozenSet[int] = field(default_factory=frozenset)
    pooled_output: bool = False
    mixup: Optional[MixupSpec] = None
    stop_early: bool = False
