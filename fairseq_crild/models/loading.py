"""Rebuilding a ``bert`` model from a fairseq checkpoint outside ``fairseq-train``.

Used by the export script, the teacher loader and tests. Loading goes through fairseq's own
``load_checkpoint_to_cpu`` (safe loading with our allow-list, see checkpoint_safety).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple, Type

from fairseq import checkpoint_utils
from fairseq.data import Dictionary

from fairseq_crild.models import roberta  # noqa: F401  (registers crild_roberta)
from fairseq_crild.models import roberta_conversion as rc
from fairseq_crild.models.bert import BertConfig, BertModel

BERT_FIELDS = {f.name for f in dataclasses.fields(BertConfig)}


def read_checkpoint(path: str) -> Dict[str, Any]:
    """fairseq's loader (safe, upgraded); raises FileNotFoundError with the path if absent,
    :class:`~fairseq_crild.checkpoint_safety.UnsafeCheckpointError` (one line) for a file that
    is not a readable fairseq checkpoint."""
    import os

    if os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} is a folder; give the .pt file inside it "
                                "(e.g. checkpoint_best.pt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        from fairseq_crild.checkpoint_safety import NotACheckpointError

        raise NotACheckpointError(f"{path}: no state dict under 'model'; not a checkpoint of "
                                  "fairseq-train or scripts/convert_hf_bert.py")
    return state


def _class_and_config(state: Dict[str, Any], path: str) -> Tuple[Type[BertModel], BertConfig]:
    model_cfg = rc.model_config_dict(state)
    if not model_cfg:
        raise ValueError(f"{path}: no model config in the checkpoint")
    cls = model_class_for(str(model_cfg.get("_name") or model_cfg.get("arch") or ""), path)
    return cls, cls.config_class(**{k: v for k, v in model_cfg.items() if k in BERT_FIELDS})


def bert_config_from_checkpoint(state: Dict[str, Any], path: str = "checkpoint") -> BertConfig:
    return _class_and_config(state, path)[1]


def model_class_for(name: str, path: str = "checkpoint") -> Type[BertModel]:
    """The model class of an architecture or model name (``bert_*``, ``crild_roberta*``);
    anything that is not this plugin's encoder is refused."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    cls = ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)
    if not (isinstance(cls, type) and issubclass(cls, BertModel)):
        raise ValueError(f"{path}: model {name!r} is not this plugin's BERT")
    return cls


def build_from_state(state: Dict[str, Any], path: str, vocab_size: int,
                     padding_idx: int) -> BertModel:
    """The model a checkpoint (ours, or a converted one) describes, with its heads and
    weights loaded strictly."""
    cls, cfg = _class_and_config(state, path)
    model = cls(cfg, vocab_size, padding_idx)
    for name, size in head_sizes(state["model"]).items():
        model.register_classification_head(name, num_classes=size)
    model.load_state_dict(state["model"], strict=True)
    return model


def head_sizes(state_dict: Dict[str, Any]) -> Dict[str, int]:
    """{head name: number of outputs} of the classification heads in a state dict."""
    sizes = {}
    for key, value in state_dict.items():
        if key.startswith("classification_heads.") and key.endswith(".out_proj.weight"):
            sizes[key.split(".")[1]] = int(value.shape[0])
    return sizes


def checkpoint_input_format(state: Dict[str, Any], path: str = "checkpoint") -> str:
    """The input layout (``bert`` or ``roberta``) of a checkpoint's model, read from its config
    before the model is built: the layout decides how its dict.txt must be loaded."""

    if rc.is_fairseq_roberta(state):
        return "roberta"
    model_cfg = rc.model_config_dict(state)
    name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    return model_class_for(name, path).input_format


def load_bert(path: str, dictionary: Dictionary, head_name: Optional[str] = None,
              state: Optional[Dict[str, Any]] = None) -> Tuple[BertModel, Dict[str, Any]]:
    """Builds the model a checkpoint describes, with its heads, and loads its weights.

    A fairseq ``roberta`` checkpoint is converted into ``crild_roberta`` first, keeping the
    head ``head_name`` (default: its only head; the returned state is the converted one).
    ``state``: the checkpoint already read by :func:`read_checkpoint` (not read twice).
    """

    if state is None:
        state = read_checkpoint(path)
    if rc.is_fairseq_roberta(state):
        head = head_name if head_name is not None else rc.single_head(state["model"], path)
        state = rc.roberta_as_crild_state(state, path, head, dictionary.pad())
    bert_config_from_checkpoint(state, path)  # refuses a foreign model before any shape check
    sd = state["model"]
    rows = sd["embeddings.word_embeddings.weight"].shape[0]
    if rows != len(dictionary):
        raise ValueError(
            f"{path}: the model's vocabulary has {rows} entries but the dictionary has "
            f"{len(dictionary)}; use the dict.txt the model was converted/trained with"
        )
    return build_from_state(state, path, len(dictionary), dictionary.pad()), state
