"""The ``crild_roberta`` model: our BERT encoder with fairseq RoBERTa's embeddings.

RoBERTa's transformer is BERT's (post-LN layers, erf-GELU, tanh-activated head on ``<s>``);
only the embeddings differ: learned positions numbered from ``padding_idx + 1`` over the real
tokens (a table of ``max positions + padding_idx + 1`` rows, as fairseq's
``LearnedPositionalEmbedding``), no token-type embeddings, LayerNorm eps 1e-5 and padded
positions zeroed after the embedding LayerNorm. Swapping that one block keeps a single
transformer implementation, so every criterion's :class:`FeatureRequest` (hidden states,
attention scores, Q/K/V, mixup) works unchanged for RoBERTa teachers and students.
fairseq's own ``roberta`` checkpoints are converted into this model by
:mod:`fairseq_crild.models.roberta_conversion`.
"""


from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.models import ARCH_CONFIG_REGISTRY, register_model, register_model_architecture
from torch import Tensor, nn

from fairseq_crild.models.bert import (
    BertConfig,
    BertModel,
    _set_defaults,
    bf16_without_xla,
    dropout_impl_of,
    make_dropout,
)


@dataclass
class RobertaStyleConfig(BertConfig):
    """BertConfig with RoBERTa's defaults (the fields are the same, so checkpoints and hydra
    configs read alike; ``max_position_embeddings`` counts usable positions, as for BERT)."""

    type_vocab_size: int = field(
        default=0, metadata={"help": "unused: RoBERTa has no token-type embeddings"}
    )
    layer_norm_eps: float = field(default=1e-5, metadata={"help": "LayerNorm epsilon"})


def roberta_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """fairseq's ``utils.make_positions``: real tokens get padding_idx+1, padding_idx+2, ...
    in order, padding gets ``padding_idx`` (so left- or right-padding embed alike)."""
    mask = tokens.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class RobertaEmbeddings(nn.Module):
    """Word + padding-aware learned positions, LayerNorm, dropout, padding zeroed (fairseq's
    ``TransformerEncoder.forward_embedding`` with RoBERTa's settings)."""

    def __init__(self, vocab_size: int, cfg: BertConfig, padding_idx: int):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.padding_idx = padding_idx
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.position_embeddings = nn.Embedding(
            cfg.max_position_embeddings + padding_idx + 1, dim, padding_idx=padding_idx
        )
        self.layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = make_dropout(cfg.dropout, dropout_impl_of(cfg))

    def forward(self, tokens: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        """``token_type_ids`` is ignored: RoBERTa has none (the data never sends them)."""
        x = self.embed(tokens)
        pad = tokens.eq(self.padding_idx)
        if pad.any():
            x = x * (~pad).unsqueeze(-1).type_as(x)
        return x

    def embed(self, tokens: Tensor) -> Tensor:
        """All but the zeroing of padded rows, whose ``if`` depends on the data: graph
        exports (ONNX) call this and zero the rows unconditionally."""
        x = self.word_embeddings(tokens) + self.position_embeddings(
            roberta_positions(tokens, self.padding_idx))
        return self.dropout(self.layer_norm(x))


@register_model("crild_roberta", dataclass=RobertaStyleConfig)
class RobertaStyleModel(BertModel):
    """A RoBERTa-shaped encoder: student of RoBERTa teachers, and the form converted fairseq
    RoBERTa teachers take (see the module docstring)."""

    input_format = "roberta"
    config_class = RobertaStyleConfig

    def build_embeddings(self, vocab_size: int, cfg: BertConfig, padding_idx: int) -> nn.Module:
        return RobertaEmbeddings(vocab_size, cfg, padding_idx)


# the base name's architecture function (fairseq registers a no-op for it)
ARCH_CONFIG_REGISTRY["crild_roberta"] = bf16_without_xla


@register_model_architecture("crild_roberta", "crild_roberta_base")
def crild_roberta_base(args) -> None:
    """roberta.base's shape (12 x 768), e.g. to fine-tune a converted RoBERTa as a teacher."""
    _set_defaults(
        args, encoder_layers=12, encoder_embed_dim=768, encoder_attention_heads=12,
        encoder_ffn_embed_dim=3072,
    )


@register_model_architecture("crild_roberta", "crild_roberta_student")
def crild_roberta_student(args) -> None:
    """The default RoBERTa-shaped student: 6 layers of roberta.base's width (DistilRoBERTa's
    shape), so it can be initialised from a roberta.base checkpoint's layers."""
    _set_defaults(
        args, encoder_layers=6, encoder_embed_dim=768, encoder_attention_heads=12,
        encoder_ffn_embed_dim=3072,
    )


@register_model_architecture("crild_roberta", "crild_roberta_tiny")
def crild_roberta_tiny(args) -> None:
    """A tiny random config for tests and smoke runs (2 x 32, 2 heads)."""
    _set_defaults(
        args, encoder_layers=2, encoder_embed_dim=32, encoder_attention_heads=2,
        encoder_ffn_embed_dim=64, max_position_embeddings=128,
    )
