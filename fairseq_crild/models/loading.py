"""The one way to read a checkpoint outside ``fairseq-train``: :func:`load_checkpoint`.

Whatever the file holds (a checkpoint of this plugin's ``bert*`` / ``crild_roberta*``
models, or a fairseq ``roberta`` one), :func:`load_checkpoint` returns it in our layout (our
parameter names and model config, see :mod:`~fairseq_crild.models.roberta_conversion`) next to
what fairseq saved (its role, task config and training length). The teacher loader, the
student initialisation, the hub, prediction, export and the report all read through it.
Reading goes through fairseq's own ``load_checkpoint_to_cpu`` (safe loading with our
allow-list and one-line errors, see checkpoint_safety).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple, Type

from fairseq import checkpoint_utils
from fairseq.data import Dictionary

from fairseq_crild.models import roberta  # noqa: F401  (registers crild_roberta)
from fairseq_crild.models import roberta_conversion as rc
from fairseq_crild.models.bert import BertConfig, BertModel
from fairseq_crild.patches.checkpoint_safety import NotACheckpointError

BERT_FIELDS = {f.name for f in dataclasses.fields(BertConfig)}

#: ``head`` of :func:`load_checkpoint`: keep a fairseq RoBERTa's only classification head
ONLY_HEAD = "<only head>"


def read_checkpoint(path: str) -> Dict[str, Any]:
    """What fairseq saved, through its loader (safe, upgraded); raises FileNotFoundError with
    the path if absent, :class:`~fairseq_crild.patches.checkpoint_safety.UnsafeCheckpointError` (one
    line) for a file that is not a readable fairseq checkpoint. Not converted: use
    :func:`load_checkpoint` for the model."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} is a folder; give the .pt file inside it "
                                "(e.g. checkpoint_best.pt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise NotACheckpointError(f"{path}: no state dict under 'model'; not a checkpoint of "
                                  "fairseq-train or scripts/convert_hf_bert.py")
    return state


def saved_model_config(path: str) -> Dict[str, Any]:
    """The model config a checkpoint was saved with, as a plain dict (safe reading)."""
    return rc.model_config_dict(read_checkpoint(path))


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint in our layout (``state``) and as fairseq saved it (``saved``; the same
    object unless it was converted)."""

    path: str
    saved: Dict[str, Any]
    state: Dict[str, Any]

    @property
    def from_fairseq_roberta(self) -> bool:
        return self.state is not self.saved

    @property
    def model_state(self) -> Dict[str, Any]:
        return self.state["model"]

    @property
    def heads(self) -> Dict[str, int]:
        """{head name: number of outputs} of the classification heads."""
        return head_sizes(self.state["model"])

    @property
    def model_class(self) -> Type[BertModel]:
        return _class_and_config(self.state, self.path)[0]

    @property
    def config(self) -> BertConfig:
        return _class_and_config(self.state, self.path)[1]

    @property
    def input_format(self) -> str:
        """``bert`` or ``roberta``: the input layout of the model (and of its dict.txt)."""
        return self.model_class.input_format

    def build(self, dictionary: Dictionary) -> BertModel:
        """The model, its heads and weights loaded strictly, after checking that
        ``dictionary`` has as many symbols as its embeddings have rows."""
        self.config  # refuses a foreign model before any shape check
        rows = self.state["model"]["embeddings.word_embeddings.weight"].shape[0]
        if rows != len(dictionary):
            raise ValueError(
                f"{self.path}: the model's vocabulary has {rows} entries but the dictionary has "
                f"{len(dictionary)}; use the dict.txt the model was converted/trained with"
            )
        return build_from_state(self.state, self.path, len(dictionary), dictionary.pad())


def load_checkpoint(path: str, head: Optional[str] = ONLY_HEAD, padding_idx: int = 1,
                    saved: Optional[Dict[str, Any]] = None) -> Checkpoint:
    """Reads ``path`` (or takes ``saved``, what :func:`read_checkpoint` returned for it) and
    returns it in our layout. A fairseq ``roberta`` checkpoint is converted into
    ``crild_roberta``, keeping the classification head ``head`` (:data:`ONLY_HEAD`: its only
    one; None: none, e.g. to initialise a student); ``padding_idx``: its dictionary's."""
    if saved is None:
        saved = read_checkpoint(path)
    state = saved
    if rc.is_fairseq_roberta(saved):
        if head == ONLY_HEAD:
            head = rc.single_head(saved["model"], path)
        state = rc.roberta_as_crild_state(saved, path, head, padding_idx)
    return Checkpoint(path, saved, state)


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
    """The model a checkpoint in our layout describes, with its heads and weights loaded
    strictly."""
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


def load_bert(path: str, dictionary: Dictionary, head_name: Optional[str] = None,
              state: Optional[Dict[str, Any]] = None) -> Tuple[BertModel, Dict[str, Any]]:
    """The model of a checkpoint and its state in our layout (:func:`load_checkpoint`, then
    :meth:`Checkpoint.build`). ``head_name``: the fairseq RoBERTa head to keep (default: its
    only head); ``state``: the checkpoint already read by :func:`read_checkpoint`."""
    ckpt = load_checkpoint(path, ONLY_HEAD if head_name is None else head_name,
                           dictionary.pad(), saved=state)
    return ckpt.build(dictionary), ckpt.state
