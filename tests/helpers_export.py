"""Tiny student checkpoints with classification heads, built directly (no training run)."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import pytest
import torch

from fairseq_crild.data.dictionary import load_bert_dictionary, vocab_fingerprint
from fairseq_crild.models.bert import BertConfig, BertModel
from fairseq_crild.models.hf_conversion import fairseq_checkpoint
from fairseq_crild.models.roberta import RobertaStyleConfig, RobertaStyleModel


@pytest.fixture(autouse=True)
def one_thread():
    """Export tests run at one thread: several threads on a shared 2-core CPU spin far longer
    than they compute. Autouse in every module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data_dictionary(data_dir: str):
    return load_bert_dictionary(os.path.join(data_dir, "input0", "dict.txt"))


def save_student(path: str, dictionary, num_classes: int, *, layers: int = 2, dim: int = 32,
                 heads: int = 2, activation: str = "none", label_names: Sequence[str] = (),
                 glue_task: Optional[str] = None, head_names: Sequence[str] = ("glue",),
                 seed: int = 0, max_positions: int = 128, roberta: bool = False) -> str:
    """A random ``bert`` (``roberta``: ``crild_roberta``) checkpoint with heads, saved as
    fairseq-train would (task_state too).

    LayerNorm and bias values are perturbed so that a wrong mapping cannot hide behind 1s/0s.
    """
    torch.manual_seed(seed)
    config_class, model_class = ((RobertaStyleConfig, RobertaStyleModel) if roberta
                                 else (BertConfig, BertModel))
    cfg = config_class(encoder_layers=layers, encoder_embed_dim=dim,
                       encoder_attention_heads=heads, encoder_ffn_embed_dim=2 * dim,
                       max_position_embeddings=max_positions, classifier_activation=activation)
    model = model_class(cfg, len(dictionary), dictionary.pad())
    for name in head_names:
        model.register_classification_head(name, num_classes=num_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model_cfg = {k: (str(v) if k == "classifier_activation" else v)
                 for k, v in dataclasses.asdict(cfg).items() if k != "_name"}
    state = fairseq_checkpoint(model_cfg, model.state_dict(), "tests", vocab_fingerprint(
        dictionary))
    state["task_state"].update({"label_names": list(label_names), "glue_task": glue_task})
    if roberta:
        state["cfg"]["model"]["_name"] = "crild_roberta"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(state, path)
    return path
