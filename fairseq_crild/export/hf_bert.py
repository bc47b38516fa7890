"""A ``bert`` checkpoint as a Hugging Face ``BertModel`` (no head) or
``BertForSequenceClassification`` (one head) folder, parity-checked.

The folder is written in a temporary sibling, loaded back with transformers and run on
``[CLS] a [SEP] b [SEP]`` pairs of random word pieces (this export has no data folder) in
padded batches; our model runs on the same ids. Only when the largest |difference| is within
the tolerance (the classifier export's, 1e-4) is the folder moved into place: for a head, of
the logits; for the bare encoder, of the last hidden states at real tokens and of the pooled
outputs (the two outputs ``BertModel`` returns). So a weight that is renamed, transposed or
dropped on the way, or a model transformers computes otherwise (a mean-pooling student's head
reads the [CLS] pooler there), is refused instead of written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq.data import Dictionary
from torch import Tensor

from fairseq_crild.export.hf_classifier import hf_model
from fairseq_crild.export.student import (
    TOLERANCE,
    Batch,
    max_abs_diff,
    random_pair_batches,
    require_parity,
)
from fairseq_crild.models import FeatureRequest
from fairseq_crild.models.bert import BertModel
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    hf_config_from_bert,
    state_dict_to_hf,
)
from fairseq_crild.outputs import atomic_output_dir


def hf_bert_config(model: BertModel, dictionary: Dictionary, head: Optional[str]
                   ) -> Dict[str, Any]:
    """config.json: our sizes; ``BertModel`` without a head, else the head's label count."""
    cfg = dataclasses.asdict(model.cfg)
    cfg["classifier_activation"] = str(cfg["classifier_activation"])
    hf_cfg = hf_config_from_bert(cfg, len(dictionary), dictionary.pad())
    if head is None:
        hf_cfg["architectures"] = ["BertModel"]
    else:
        hf_cfg["num_labels"] = model.classification_heads[head].out_proj.out_features
    return hf_cfg


def write_hf_bert(model: BertModel, dictionary: Dictionary, head: Optional[str], folder: str,
                  lowercase: bool, max_length: int) -> None:
    """Writes model.safetensors, config.json, vocab.txt (fairseq dictionary order, so ids
    agree) and tokenizer_config.json (``model_max_length``) into an existing ``folder``."""
    from safetensors.torch import save_file

    sd = state_dict_to_hf(model.state_dict(), model.num_layers, head)
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_bert_config(model, dictionary, head), f, indent=2)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.writelines(dictionary[i] + "\n" for i in range(len(dictionary)))
    with open(os.path.join(folder, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                   "model_max_length": max_length}, f, indent=2)


def _real(batch: Batch) -> Tensor:
    return batch["attention_mask"].bool()


@torch.no_grad()
def our_outputs(model: BertModel, head: Optional[str], batch: Batch) -> Tuple[Tensor, ...]:
    """Our model's outputs the export must reproduce: (logits,) for a head, else (hidden
    states at real tokens, pooled outputs)."""
    model.eval()
    ids, types = batch["input_ids"], batch.get("token_type_ids")
    if head is not None:
        logits, _ = model(ids, token_type_ids=types, classification_head_name=head)
        return (logits.float(),)
    feats, extra = model(ids, token_type_ids=types, request=FeatureRequest(pooled_output=True))
    return feats[_real(batch)].float(), extra["pooled_output"].float()


@torch.no_grad()
def hf_outputs(folder: str, head: Optional[str], batches: List[Batch]) -> List[Tuple[Tensor, ...]]:
    """The same outputs of the folder as transformers loads it."""
    if head is not None:
        model = hf_model(folder, "BertForSequenceClassification")
        return [(model(**b).logits.float(),) for b in batches]
    model = hf_model(folder, "BertModel")
    out = []
    for b in batches:
        ref = model(**b)
        out.append((ref.last_hidden_state[_real(b)].float(), ref.pooler_output.float()))
    return out


@dataclass
class BertParity:
    """How the export compared with our model, per output."""

    head: Optional[str]
    max_abs_diff: Dict[str, float]  # output name -> largest |difference|
    examples: int
    batches: int
    agree: Optional[int] = None  # head: examples with the same predicted class

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())

    def describe(self, inputs: str) -> str:
        what = "BertModel" if self.head is None else "BertForSequenceClassification"
        diffs = ", ".join(f"{name} {d:.3e}" for name, d in self.max_abs_diff.items())
        agree = "" if self.agree is None else f", same predicted class {self.agree}/{self.examples}"
        return (f"parity (transformers {what} vs ours): max |diff| of {diffs} over "
                f"{self.examples} examples in {self.batches} batches ({inputs}){agree}")


def bert_parity(model: BertModel, head: Optional[str], batches: List[Batch],
                theirs: List[Tuple[Tensor, ...]]) -> BertParity:
    ours = [our_outputs(model, head, b) for b in batches]
    names = ["logits"] if head is not None else ["last hidden states", "pooled outputs"]
    diffs = {name: max_abs_diff([o[k] for o in ours], [t[k] for t in theirs])
             for k, name in enumerate(names)}
    agree = None
    if head is not None and ours[0][0].size(-1) > 1:
        agree = sum(int((o[0].argmax(-1) == t[0].argmax(-1)).sum()) for o, t in zip(ours, theirs))
    return BertParity(head, diffs, sum(len(b["input_ids"]) for b in batches), len(batches), agree)


def check_batches(dictionary: Dictionary, max_length: int) -> List[Batch]:
    """Random word-piece pairs for the parity check (``[CLS] a [SEP] b [SEP]``)."""
    return random_pair_batches(dictionary, max_length, "bert")


def export_hf_bert(model: BertModel, dictionary: Dictionary, head: Optional[str], out_dir: str,
                   lowercase: bool = True, max_length: Optional[int] = None,
                   overwrite: bool = False, tolerance: float = TOLERANCE,
                   batches: Optional[List[Batch]] = None) -> BertParity:
    """Writes ``out_dir`` only if transformers reproduces our outputs within ``tolerance``
    (:class:`~fairseq_crild.export.student.ExportError` otherwise, and nothing is written)."""
    max_length = max_length or model.max_positions()
    batches = batches if batches is not None else check_batches(dictionary, max_length)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        write_hf_bert(model, dictionary, head, tmp, lowercase, max_length)
        result = bert_parity(model, head, batches, hf_outputs(tmp, head, batches))
        require_parity(result.worst, f"{out_dir} (transformers)", tolerance,
                       "logits" if head is not None else "outputs")
    return result

