"""fairseq ``roberta`` checkpoints -> ``crild_roberta`` state (teacher, student init).

A fine-tuned fairseq RoBERTa (``fairseq-train --task sentence_prediction --arch
roberta_base``, or any model registered as a subclass of fairseq's RobertaModel) is read with
fairseq's own loader and renamed into our encoder: ``encoder.sentence_encoder.X`` ->
embeddings/layers, ``self_attn`` -> ``attention``, and the task head's ``dense`` (RoBERTa's
head: dropout, dense, tanh, dropout, out_proj on ``<s>``) becomes our pooler, so in eval mode
the logits are fairseq's. The MLM head and other heads are dropped. Variants that would
compute something else (pre-LN, another activation, scaled embeddings...) are refused by
name rather than converted wrongly.

Pure functions of the saved state (no file is read, nothing is checked against data):
:func:`fairseq_crild.models.loading.load_checkpoint` applies them. The converted state keeps
the fine-tuning task config under ``roberta_source``, from which the teacher checks compare
the folder the RoBERTa was fine-tuned on with the distillation data
(:func:`fairseq_crild.distill.teacher.check_roberta_training_data`).
"""

from __future__ import annotations

import logging
from argparse import Namespace
from typing import Any, Dict, Optional

from omegaconf import OmegaConf
from torch import Tensor

from fairseq_crild.errors import CrildError
from fairseq_crild.models.roberta import RobertaStyleConfig

logger = logging.getLogger(__name__)

ENC = "encoder.sentence_encoder."
MODEL_NAME = "crild_roberta"

# fairseq RoBERTa options our encoder reproduces only at these values
_REQUIRED = {
    "activation_fn": ("gelu", "our layers use erf-GELU"),
    "pooler_activation_fn": ("tanh", "our pooler is tanh"),
    "encoder_normalize_before": (False, "our layers are post-LN"),
    "no_scale_embedding": (True, "our embeddings are not scaled"),
    "layernorm_embedding": (True, "our embeddings end with a LayerNorm"),
    "encoder_learned_pos": (True, "our positions are learned"),
    "no_token_positional_embeddings": (False, "our encoder has positions"),
    "adaptive_input": (False, "our word embeddings are one table"),
    "spectral_norm_classification_head": (False, "our head is a plain Linear"),
}


class RobertaConversionError(CrildError, ValueError):
    """A fairseq RoBERTa checkpoint our encoder cannot reproduce exactly."""


def _config_section(state: Dict[str, Any], name: str, resolve: bool) -> Dict[str, Any]:
    """One section of a checkpoint's config as a plain dict: hydra ``cfg.<name>``, else the
    legacy ``args`` Namespace (which holds every section's options at once)."""
    cfg = state.get("cfg")
    section = cfg.get(name) if cfg is not None else None
    if section is None and state.get("args") is not None:
        section = state["args"]
    if section is None:
        return {}
    if OmegaConf.is_config(section):
        return OmegaConf.to_container(section, resolve=resolve)
    return vars(section) if isinstance(section, Namespace) else dict(section)


def model_config_dict(state: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint's model config as a plain dict (hydra ``cfg`` or legacy ``args``)."""
    return _config_section(state, "model", resolve=True)


def task_config_dict(state: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint's task config, interpolations kept (they may name other sections)."""
    return _config_section(state, "task", resolve=False)


def is_fairseq_roberta(state: Dict[str, Any]) -> bool:
    """Whether a checkpoint holds a fairseq RoBERTa (or subclass: XLM-R, CamemBERT...)."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
    from fairseq.models.roberta import RobertaModel

    model_cfg = model_config_dict(state)
    name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    cls = ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)
    if cls is not None:
        return isinstance(cls, type) and issubclass(cls, RobertaModel)
    return any(k.startswith(ENC) for k in state.get("model", {}))


def _check_options(model_cfg: Dict[str, Any], path: str) -> None:
    for key, (want, why) in _REQUIRED.items():
        if key in model_cfg and model_cfg[key] is not None and model_cfg[key] != want:
            raise RobertaConversionError(
                f"{path}: RoBERTa option {key}={model_cfg[key]!r} is not supported ({why}; "
                f"only {want!r} converts exactly)")
    for key in ("quant_noise_pq", "quant_noise_scalar"):
        if model_cfg.get(key):
            logger.warning(f"{path}: {key}={model_cfg[key]} (training-time noise only; the "
                           "weights convert as they are)")


def convert_roberta_state_dict(sd: Dict[str, Tensor], head_name: Optional[str],
                               path: str = "checkpoint") -> Dict[str, Tensor]:
    """fairseq RoBERTa parameter names -> ours. ``head_name``'s dense layer becomes the pooler
    (None: no head, e.g. a pretrained checkpoint used to initialise a student)."""
    out: Dict[str, Tensor] = {}
    renames = {
        "embed_tokens.weight": "embeddings.word_embeddings.weight",
        "embed_positions.weight": "embeddings.position_embeddings.weight",
        "layernorm_embedding.weight": "embeddings.layer_norm.weight",
        "layernorm_embedding.bias": "embeddings.layer_norm.bias",
    }
    dropped_heads = set()
    for key, value in sd.items():
        if key.startswith(ENC):
            local = key[len(ENC):]
            if local in renames:
                out[renames[local]] = value
            elif local.startswith("layers."):
                local = local.replace(".self_attn_layer_norm.", ".attn_layer_norm.")
                out[local.replace(".self_attn.", ".attention.")] = value
            elif local == "version":
                continue
            elif local.startswith("layer_norm."):
                raise RobertaConversionError(
                    f"{path}: the encoder has a final LayerNorm (pre-LN RoBERTa); only "
                    "post-LN RoBERTa converts exactly")
            else:
                raise RobertaConversionError(f"{path}: unexpected RoBERTa parameter {key}")
        elif key.startswith("classification_heads."):
            name, rest = key[len("classification_heads."):].split(".", 1)
            if name != head_name:
                dropped_heads.add(name)
            elif rest.startswith("dense."):
                out["pooler." + rest[len("dense."):]] = value
            elif rest.startswith("out_proj."):
                out[f"classification_heads.{name}.{rest}"] = value
            else:
                raise RobertaConversionError(f"{path}: unexpected head parameter {key}")
        elif not key.startswith("encoder.lm_head."):
            raise RobertaConversionError(f"{path}: unexpected RoBERTa parameter {key}")
    if dropped_heads:
        logger.info(f"{path}: dropping classification heads {sorted(dropped_heads)}")
    return out


def single_head(sd: Dict[str, Tensor], path: str = "checkpoint") -> Optional[str]:
    """The name of a RoBERTa checkpoint's only classification head (None: it has none)."""
    heads = sorted({k.split(".")[1] for k in sd if k.startswith("classification_heads.")})
    if len(heads) > 1:
        raise RobertaConversionError(f"{path}: several classification heads {heads}; name "
                                     "the one to keep")
    return heads[0] if heads else None


def roberta_config(sd: Dict[str, Tensor], model_cfg: Dict[str, Any], padding_idx: int,
                   path: str = "checkpoint") -> RobertaStyleConfig:
    """Our config for a converted state dict: sizes read from the tensors themselves."""
    _check_options(model_cfg, path)
    dim = sd["embeddings.word_embeddings.weight"].shape[1]
    layers = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    heads = model_cfg.get("encoder_attention_heads")
    if not heads:
        raise RobertaConversionError(f"{path}: no encoder_attention_heads in its config")
    rows = sd["embeddings.position_embeddings.weight"].shape[0]
    if rows <= padding_idx + 1:
        raise RobertaConversionError(f"{path}: position table of {rows} rows is too small")
    if "pooler.weight" in sd and tuple(sd["pooler.weight"].shape) != (dim, dim):
        raise RobertaConversionError(
            f"{path}: classification head inner dim {sd['pooler.weight'].shape[0]} differs "
            f"from the width {dim}; only inner_dim = encoder_embed_dim converts")

    def opt(key: str, default: float) -> float:
        value = model_cfg.get(key)
        return default if value is None else float(value)

    return RobertaStyleConfig(
        encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=int(heads),
        encoder_ffn_embed_dim=sd["layers.0.fc1.weight"].shape[0] if layers else 4 * dim,
        max_position_embeddings=rows - padding_idx - 1,
        dropout=opt("dropout", 0.1), attention_dropout=opt("attention_dropout", 0.1),
        pooler_dropout=opt("pooler_dropout", 0.0),
    )


def roberta_as_crild_state(state: Dict[str, Any], path: str, head_name: Optional[str],
                           padding_idx: int = 1) -> Dict[str, Any]:
    """A fairseq RoBERTa checkpoint as a checkpoint of our ``crild_roberta`` model (what
    :func:`fairseq_crild.models.loading.build_from_state` and the teacher checks read)."""
    sd = convert_roberta_state_dict(state["model"], head_name, path)
    if "embeddings.word_embeddings.weight" not in sd:
        raise RobertaConversionError(f"{path}: no {ENC}embed_tokens.weight: not a RoBERTa")
    cfg = roberta_config(sd, model_config_dict(state), padding_idx, path)
    model_cfg = {**vars(cfg), "_name": MODEL_NAME}
    return {"cfg": {"model": model_cfg}, "model": sd, "task_state": {},
            "roberta_source": {"path": path, "task": task_config_dict(state)}}
