"""A BERT encoder as a fairseq model, numerically equivalent to Hugging Face's BertModel.

Word + learned absolute position + token-type embeddings, LayerNorm, post-LN transformer
layers with erf-GELU, a tanh pooler on [CLS] (or a mean over tokens) and named
classification/regression heads (one body can carry several task heads, as fairseq's RoBERTa
does). Intermediate features are
returned only when a :class:`FeatureRequest` asks for them; layers whose attention scores are
not requested use fused scaled-dot-product attention.
"""


import importlib.util
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (
    ARCH_CONFIG_REGISTRY,
    BaseFairseqModel,
    register_model,
    register_model_architecture,
)
from torch import Tensor, nn

from fairseq_crild.models.hash_dropout import HashDropout, draw_seed, ensure_kernel, hash_dropout
from fairseq_crild.models.requests import FeatureRequest

logger = logging.getLogger(__name__)

CLASSIFIER_ACTIVATIONS = ChoiceEnum(["none", "relu"])
SENTENCE_POOLINGS = ChoiceEnum(["cls", "mean"])
DROPOUT_IMPLS = ChoiceEnum(["torch", "hash"])


@dataclass
class BertConfig(FairseqDataclass):
    encoder_layers: int = field(default=6, metadata={"help": "number of transformer layers"})
    encoder_embed_dim: int = field(default=768, metadata={"help": "hidden size"})
    encoder_attention_heads: int = field(default=12, metadata={"help": "attention heads"})
    encoder_ffn_embed_dim: int = field(default=3072, metadata={"help": "feed-forward size"})
    max_position_embeddings: int = field(
        default=512, metadata={"help": "size of the learned position table (max tokens)"}
    )
    type_vocab_size: int = field(default=2, metadata={"help": "number of token types"})
    layer_norm_eps: float = field(default=1e-12, metadata={"help": "LayerNorm epsilon"})
    dropout: float = field(default=0.1, metadata={"help": "hidden dropout"})
    attention_dropout: float = field(default=0.1, metadata={"help": "attention-prob dropout"})
    pooler_dropout: float = field(
        default=0.1, metadata={"help": "dropout before the classification head"}
    )
    classifier_activation: CLASSIFIER_ACTIVATIONS = field(
        default="none",
        metadata={
            "help": "activation on the pooled output before the head: 'none' is standard "
            "BERT, 'relu' reproduces the CR-ILD authors' head (Linear(relu(pooler)))"
        },
    )
    sentence_pooling: SENTENCE_POOLINGS = field(
        default="cls",
        metadata={
            "help": "what the head reads: 'cls' is BERT's tanh(pooler([CLS])); 'mean' is the "
            "mean of the last layer over real tokens with no pooler, the pooling that "
            "sentence encoders such as all-MiniLM-L6-v2 were trained with (their [CLS] "
            "pooler is untrained)"
        },
    )
    init_std: float = field(default=0.02, metadata={"help": "stddev of weight init"})
    dropout_impl: DROPOUT_IMPLS = field(
        default="torch",
        metadata={
            "help": "where every dropout's mask comes from: 'torch' (torch's generator, serial "
            "on the CPU) or 'hash' (a counter-based mask computed in parallel by a C++ kernel "
            "compiled at first use; needs a C++ compiler and ninja; same distribution, its "
            "own random stream; CPU only, other devices keep torch's)"
        },
    )


def dropout_impl_of(cfg: Any) -> str:
    """The config's dropout implementation ('torch' for checkpoints older than the field)."""
    return str(getattr(cfg, "dropout_impl", None) or "torch")


def make_dropout(p: float, impl: str) -> nn.Dropout:
    """nn.Dropout or its counter-based twin (same ``p``, no parameters, same state dict)."""
    if impl == "hash":
        return HashDropout(p)
    if impl != "torch":
        raise ValueError(f"--dropout-impl {impl!r}: choose torch or hash")
    return nn.Dropout(p)


def functional_dropout(impl: str) -> Callable[[Tensor, float, bool], Tensor]:
    """F.dropout or hash_dropout, as ``fn(x, p, training)``."""
    return hash_dropout if impl == "hash" else F.dropout


def skip_dropout_draw(n: int, p: float, impl: str, device: torch.device) -> None:
    """Consumes what one dropout over ``n`` elements takes from the random stream, without
    computing it: n Bernoulli draws (torch) or one seed (hash)."""
    if impl == "hash" and device.type == "cpu":
        draw_seed()
    else:
        torch.empty(n, device=device).bernoulli_(1.0 - p)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, cfg: BertConfig, padding_idx: int):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, dim)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, dim)
        self.layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = make_dropout(cfg.dropout, dropout_impl_of(cfg))

    def forward(self, tokens: Tensor, token_type_ids: Optional[Tensor]) -> Tensor:
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.word_embeddings(tokens) + self.position_embeddings(positions)[None]
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        if dim % heads:
            raise ValueError(f"encoder_embed_dim {dim} is not divisible by {heads} heads")
        self.num_heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attention_dropout = cfg.attention_dropout
        self.dropout_impl = dropout_impl_of(cfg)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: Tensor, key_keep: Optional[Tensor], want_scores: bool, want_qkv: bool
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """``key_keep``: (B, 1, 1, T) bool, True for real keys (None: no padding)."""
        q_lin, k_lin, v_lin = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = self._split(q_lin), self._split(k_lin), self._split(v_lin)
        out: Dict[str, Any] = {}
        dropout_p = self.attention_dropout if self.training else 0.0
        # SDPA's dropout draws from torch's generator: the hash mask needs the explicit path
        hashed = self.dropout_impl == "hash" and dropout_p > 0 and x.device.type == "cpu"
        if want_scores or hashed:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if key_keep is not None:
                # the dtype's lowest finite value rather than -inf (as HF does): softmax is the
                # same, and losses taking these scores as targets never see 0 * -inf = NaN
                scores = scores.masked_fill(~key_keep, torch.finfo(scores.dtype).min)
            drop = functional_dropout(self.dropout_impl)
            probs = drop(torch.softmax(scores, dim=-1), dropout_p, self.training)
            ctx = torch.matmul(probs.to(v.dtype), v)
            if want_scores:
                out["scores"] = scores
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_keep, dropout_p=dropout_p)
        if want_qkv:
            out["qkv"] = {"q": q_lin, "k": k_lin, "v": v_lin}
        b, _, t, _ = ctx.shape
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, -1)), out

    def qkv_only(self, x: Tensor) -> Dict[str, Any]:
        """The Q/K/V projections alone (what ``forward(..., want_qkv=True)`` returns as
        ``qkv``, bit for bit), for a forward that stops there."""
        return {"qkv": {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}}


class BertLayer(nn.Module):
    """Post-LN transformer layer: LN(x + attn(x)), then LN(h + FFN(h))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.attention = BertSelfAttention(cfg)
        self.attn_layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = make_dropout(cfg.dropout, dropout_impl_of(cfg))

    def forward(
        self, x: Tensor, key_keep: Optional[Tensor], want_scores: bool, want_qkv: bool
    ) -> Tuple[Tensor, Dict[str, Any]]:
        attn, extra = self.attention(x, key_keep, want_scores, want_qkv)
        h = self.attn_layer_norm(x + self.dropout(attn))
        ffn = self.fc2(F.gelu(self.fc1(h)))
        return self.final_layer_norm(h + self.dropout(ffn)), extra

    def dropout_draws(self, shape: Tuple[int, int, int]) -> List[Tuple[int, float]]:
        """(element count, drop probability) of each random draw ``forward`` makes on an
        input of ``shape`` (B, T, D), in order: the attention dropout over (B, H, T, T), then
        the two hidden-state dropouts (none outside training or at p = 0)."""
        if not self.training:
            return []
        b, t, d = shape
        draws = [(b * self.attention.num_heads * t * t, float(self.attention.attention_dropout)),
                 (b * t * d, float(self.dropout.p)), (b * t * d, float(self.dropout.p))]
        return [(n, p) for n, p in draws if p > 0 and n > 0]


class BertClassificationHead(nn.Module):
    """Dropout + Linear on the pooled [CLS] output (optionally relu first, as the authors)."""

    def __init__(self, dim: int, num_classes: int, dropout: float, activation: str = "none",
                 dropout_impl: str = "torch"):
        super().__init__()
        self.activation = str(activation)
        self.dropout = make_dropout(dropout, dropout_impl)
        self.out_proj = nn.Linear(dim, num_classes)

    def forward(self, pooled: Tensor) -> Tensor:
        if self.activation == "relu":
            pooled = F.relu(pooled)
        return self.out_proj(self.dropout(pooled))


@register_model("bert", dataclass=BertConfig)
class BertModel(BaseFairseqModel):
    """BERT body + tanh pooler + named heads. See module docstring."""

    #: how the task must lay out inputs for this encoder (``[CLS] a [SEP] b [SEP]`` + types)
    input_format = "bert"
    config_class = BertConfig

    def __init__(self, cfg: BertConfig, vocab_size: int, padding_idx: int):
        super().__init__()
        self.cfg = cfg
        self.padding_idx = padding_idx
        if dropout_impl_of(cfg) == "hash":
            ensure_kernel()  # a missing compiler fails here, naming the option, not mid-epoch
        self.embeddings = self.build_embeddings(vocab_size, cfg, padding_idx)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.encoder_layers))
        # mean pooling has no pooler: a parameter without gradients would stall DDP
        self.pooler: Optional[nn.Linear] = (
            None if self.mean_pooled else nn.Linear(cfg.encoder_embed_dim, cfg.encoder_embed_dim)
        )
        self.classification_heads = nn.ModuleDict()
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.cfg.init_std
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def build_embeddings(self, vocab_size: int, cfg: BertConfig, padding_idx: int) -> nn.Module:
        """The embedding block (the one part RoBERTa-style subclasses replace)."""
        return BertEmbeddings(vocab_size, cfg, padding_idx)

    @classmethod
    def build_model(cls, cfg: BertConfig, task) -> "BertModel":
        dictionary = task.source_dictionary
        return cls(cfg, len(dictionary), dictionary.pad())

    def max_positions(self) -> int:
        return self.cfg.max_position_embeddings

    @property
    def mean_pooled(self) -> bool:
        return str(getattr(self.cfg, "sentence_pooling", "cls")) == "mean"

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.cfg.encoder_embed_dim

    def register_classification_head(
        self, name: str, num_classes: Optional[int] = None, inner_dim: Optional[int] = None,
        **kwargs,
    ) -> None:
        """Adds (or replaces, with a warning when the size differs) the head ``name``."""
        if name in self.classification_heads:
            prev = self.classification_heads[name].out_proj.out_features
            if prev == num_classes:
                return
            logger.warning(f"re-registering head {name!r} with {num_classes} outputs (was {prev})")
        head = BertClassificationHead(
            self.cfg.encoder_embed_dim, num_classes, self.cfg.pooler_dropout,
            self.cfg.classifier_activation, dropout_impl_of(self.cfg),
        )
        head.apply(self._init_weights)
        self.classification_heads[name] = head

    def pool(self, features: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """The sentence vector the heads read (see ``--sentence-pooling``); ``padding_mask``
        (B, T, True at padding) is needed for mean pooling only."""
        if self.pooler is not None:
            return torch.tanh(self.pooler(features[:, 0]))
        if padding_mask is None:
            return features.mean(dim=1)
        keep = (~padding_mask).unsqueeze(-1).to(features.dtype)
        return (features * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)

    def forward(
        self,
        src_tokens: Tensor,
        token_type_ids: Optional[Tensor] = None,
        features_only: bool = True,
        classification_head_name: Optional[str] = None,
        request: Optional[FeatureRequest] = None,
        **unused,
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """Returns (head logits if ``classification_head_name`` else last hidden states, extra).

        ``features_only`` is accepted for compatibility with fairseq's criterions; this model
        has no LM head, so features are returned whenever no head is named.
        """
        request = request or FeatureRequest()
        padding_mask = src_tokens.eq(self.padding_idx)
        x = self.embeddings(src_tokens, token_type_ids)
        if request.mixup is not None:
            x, padding_mask = request.mixup.apply(x, padding_mask)
        key_keep = (~padding_mask)[:, None, None, :] if padding_mask.any() else None

        extra: Dict[str, Any] = {"padding_mask": padding_mask}
        hidden: Optional[List[Tensor]] = [x] if request.hidden_states else None
        scores: Dict[int, Tensor] = {}
        qkv: Dict[int, Dict[str, Tensor]] = {}
        stop = self._stop_layer(request, classification_head_name, x)
        shape: Optional[Tuple[int, int, int]] = None  # of the layers' input, once skipping
        for i, layer in enumerate(self.layers):
            if stop is not None and (i > stop or (i == stop and i not in request.attention_scores)):
                if shape is None:
                    shape = tuple(x.shape)  # type: ignore[assignment]
                    if i == stop:
                        qkv[i] = layer.attention.qkv_only(x)["qkv"]
                    x = None  # type: ignore[assignment]
                # the skipped dropouts' draws, so the random stream is the full forward's
                for n, p in layer.dropout_draws(shape):  # type: ignore[arg-type]
                    skip_dropout_draw(n, p, dropout_impl_of(self.cfg), padding_mask.device)
                continue
            x, layer_extra = layer(x, key_keep, i in request.attention_scores, i in request.qkv)
            if hidden is not None:
                hidden.append(x)
            if "scores" in layer_extra:
                scores[i] = layer_extra["scores"]
            if "qkv" in layer_extra:
                qkv[i] = layer_extra["qkv"]
        if hidden is not None:
            extra["hidden_states"] = hidden
        if request.attention_scores:
            extra["attention_scores"] = scores
        if request.qkv:
            extra["qkv"] = qkv

        if classification_head_name is not None or request.pooled_output:
            pooled = self.pool(x, padding_mask)
            extra["pooled_output"] = pooled
            if classification_head_name is not None:
                return self.classification_heads[classification_head_name](pooled), extra
        return x, extra

    def _stop_layer(self, request: FeatureRequest, head: Optional[str],
                    x: Tensor) -> Optional[int]:
        """The last layer a ``stop_early`` request needs (None: run every layer). Skipped
        dropouts are replayed as draws of the same sizes, which reproduces the random
        stream of the CPU generator (serial, one draw per element); on other devices a
        training forward with dropout runs every layer."""
        if (not request.stop_early or head is not None or request.pooled_output
                or request.hidden_states):
            return None
        needed = request.qkv | request.attention_scores
        if not needed:
            return None
        last = max(needed)
        if last >= len(self.layers) - 1 and last in request.attention_scores:
            return None  # the last layer runs in full anyway
        if x.device.type != "cpu" and any(layer.dropout_draws((1, 1, 1))
                                          for layer in self.layers[last:]):
            return None
        return last

    def upgrade_state_dict_named(self, state_dict: Dict[str, Tensor], name: str) -> None:
        """Reconciles classification heads between a checkpoint and this model (as RoBERTa).

        Heads the checkpoint has but this model lacks are dropped; heads this model has but
        the checkpoint lacks (e.g. fine-tuning a converted pretrained encoder) keep their
        fresh initialisation. A pretrained checkpoint without pooler weights keeps ours.
        """
        prefix = name + "." if name else ""
        super().upgrade_state_dict_named(state_dict, name)
        head_prefix = prefix + "classification_heads."
        current = self.state_dict()
        for key in list(state_dict.keys()):
            if self.pooler is None and key.startswith(prefix + "pooler."):
                del state_dict[key]  # a [CLS]-pooled source read by a mean-pooled model
                continue
            if not key.startswith(head_prefix):
                continue
            head_name = key[len(head_prefix):].split(".")[0]
            local = key[len(prefix):]
            if head_name not in self.classification_heads:
                logger.info(f"dropping classification head {head_name!r} from the checkpoint")
                del state_dict[key]
            elif state_dict[key].shape != current[local].shape:
                logger.warning(
                    f"classification head {head_name!r} has shape "
                    f"{tuple(state_dict[key].shape)} in the checkpoint and "
                    f"{tuple(current[local].shape)} here: re-initialising it"
                )
                state_dict[key] = current[local]
        for local, value in current.items():
            is_head = local.startswith("classification_heads.")
            is_pooler = local.startswith("pooler.")
            if (is_head or is_pooler) and prefix + local not in state_dict:
                logger.info(f"{local} not in the checkpoint: keeping its initialisation")
                state_dict[prefix + local] = value


def bf16_without_xla(args) -> None:
    """Lets ``--bf16`` mean bfloat16 on the CPU (with ``--cpu``) or the GPU.

    fairseq's parser turns ``--bf16`` into ``--tpu`` (its only bf16 device), and without
    torch_xla the trainer then dies ('NoneType' object has no attribute 'xla_device').
    Architecture functions are the one hook fairseq runs after that rewrite: without
    torch_xla, undo it; fairseq then keeps fp32 master weights (FP16Optimizer, no loss scaling)
    and casts model and batches to bf16, and the criterions compute their losses in fp32.
    """
    if (getattr(args, "bf16", False) and getattr(args, "tpu", False)
            and importlib.util.find_spec("torch_xla") is None):
        args.tpu = False


def _set_defaults(args, **defaults) -> None:
    bf16_without_xla(args)
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


# the base name's architecture function (fairseq registers a no-op for it)
ARCH_CONFIG_REGISTRY["bert"] = bf16_without_xla


@register_model_architecture("bert", "bert_student")
def bert_student(args) -> None:
    """The default student: 6 layers, 768 wide (override any size on the command line)."""
    _set_defaults(
        args, encoder_layers=6, encoder_embed_dim=768, encoder_attention_heads=12,
        encoder_ffn_embed_dim=3072,
    )


@register_model_architecture("bert", "bert_hf_base")
def bert_hf_base(args) -> None:
    """BERT-base teacher (fairseq's own masked_lm already owns the name ``bert_base``)."""
    _set_defaults(
        args, encoder_layers=12, encoder_embed_dim=768, encoder_attention_heads=12,
        encoder_ffn_embed_dim=3072,
    )


@register_model_architecture("bert", "bert_hf_large")
def bert_hf_large(args) -> None:
    _set_defaults(
        args, encoder_layers=24, encoder_embed_dim=1024, encoder_attention_heads=16,
        encoder_ffn_embed_dim=4096,
    )


@register_model_architecture("bert", "bert_minilm_l6")
def bert_minilm_l6(args) -> None:
    """The shape of all-MiniLM-L6-v2 (6 x 384, 12 heads), the offline teacher."""
    _set_defaults(
        args, encoder_layers=6, encoder_embed_dim=384, encoder_attention_heads=12,
        encoder_ffn_embed_dim=1536,
    )


@register_model_architecture("bert", "bert_minilm_l3")
def bert_minilm_l3(args) -> None:
    _set_defaults(
        args, encoder_layers=3, encoder_embed_dim=384, encoder_attention_heads=12,
        encoder_ffn_embed_dim=1536,
    )


@register_model_architecture("bert", "bert_tiny")
def bert_tiny(args) -> None:
    """A tiny random config for tests and smoke runs (2 x 32, 2 heads)."""
    _set_defaults(
        args, encoder_layers=2, encoder_embed_dim=32, encoder_attention_heads=2,
        encoder_ffn_embed_dim=64, max_position_embeddings=128,
    )
