"""Rebuilding a ``bert`` model from a fairseq checkpoint outside ``fairseq-train``.

Used by the export script, the teacher loader and tests. Loading goes through fairseq's own
``load_checkpoint_to_cpu`` (safe loading with our allow-list, see checkpoint_safety).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from omegaconf import OmegaConf

from fairseq_crild.models.bert import BertConfig, BertModel

BERT_FIELDS = {f.name for f in dataclasses.fields(BertConfig)}


def read_checkpoint(path: str) -> Dict[str, Any]:
    """fairseq's loader (safe, upgraded); raises FileNotFoundError with the path if absent."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return checkpoint_utils.load_checkpoint_to_cpu(path)


def bert_config_from_checkpoint(state: Dict[str, Any], path: str = "checkpoint") -> BertConfig:
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if cfg is not None else None
    if model_cfg is None:
        raise ValueError(f"{path}: no model config in the checkpoint")
    if OmegaConf.is_config(model_cfg):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    elif not isinstance(model_cfg, dict):
        model_cfg = vars(model_cfg)
    name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    if not name.startswith("bert"):
        raise ValueError(f"{path}: model {name!r} is not this plugin's BERT")
    return BertConfig(**{k: v for k, v in model_cfg.items() if k in BERT_FIELDS})


def head_sizes(state_dict: Dict[str, Any]) -> Dict[str, int]:
    """{head name: number of outputs} of the classification heads in a state dict."""
    sizes = {}
    for key, value in state_dict.items():
        if key.startswith("classification_heads.") and key.endswith(".out_proj.weight"):
            sizes[key.split(".")[1]] = int(value.shape[0])
    return sizes


def load_bert(path: str, dictionary: Dictionary) -> Tuple[BertModel, Dict[str, Any]]:
    """Builds the model a checkpoint describes, with its heads, and loads its weights."""
    state = read_checkpoint(path)
    cfg = bert_config_from_checkpoint(state, path)
    sd = state["model"]
    rows = sd["embeddings.word_embeddings.weight"].shape[0]
    if rows != len(dictionary):
        raise ValueError(
            f"{path}: the model's vocabulary has {rows} entries but the dictionary has "
            f"{len(dictionary)}; use the dict.txt the model was converted/trained with"
        )
    model = BertModel(cfg, len(dictionary), dictionary.pad())
    for name, size in head_sizes(sd).items():
        model.register_classification_head(name, num_classes=size)
    model.load_state_dict(sd, strict=True)
    return model, state
