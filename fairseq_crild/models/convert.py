"""A Hugging Face BERT folder as a folder of our own: ``model.pt``, ``dict.txt`` and
``tokenizer_config.json``, what ``crild-convert`` writes and the pipeline's first step.

The conversion of the weights is :func:`fairseq_crild.models.hf_conversion.convert_hf_folder`
(a pure state-dict function); this module adds what a folder needs around it: the kept
classifier's label meaning (recorded for the teacher-vs-data check, optionally reordered),
the vocabulary fingerprint that prepare_glue.py checks its ``--dict`` against, and an atomic
write (an existing folder is replaced only with ``overwrite``, and only once the new one is
complete).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from fairseq_crild.data.dictionary import vocab_fingerprint
from fairseq_crild.models.arch_check import arch_flags
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    ConversionError,
    convert_hf_folder,
    fairseq_checkpoint,
    hf_id2label,
    labels_are_generic,
    reorder_head,
    split_names,
)
from fairseq_crild.models.pretrained import resolve_hf_dir
from fairseq_crild.outputs import atomic_output_dir, check_not_an_input


@dataclass
class Converted:
    """What a conversion wrote: the model config, sizes and notes on the kept labels."""

    out_dir: str
    cfg: Dict[str, Any]
    n_params: int
    vocab_size: int
    notes: List[str] = field(default_factory=list)

    def summary(self) -> List[str]:
        """The lines crild-convert prints; the last one is the ``--arch`` flags."""
        cfg = self.cfg
        return [f"wrote {self.out_dir}/model.pt ({cfg['encoder_layers']} layers, "
                f"{cfg['encoder_embed_dim']} wide, {self.n_params / 1e6:.1f}M parameters) and "
                f"dict.txt ({self.vocab_size} symbols)",
                *self.notes,
                "fine-tune or resume it with these model flags (a --teacher-path needs none):",
                f"  {arch_flags(cfg)}"]


def convert_to_folder(hf_dir: str, out_dir: str, head_name: Optional[str] = None,
                      label_names: Optional[str] = None, label_order: Optional[str] = None,
                      overwrite: bool = False) -> Converted:
    """Converts ``hf_dir`` (a folder, or ``minilm`` for the packaged all-MiniLM-L6-v2) into
    ``out_dir``. ``head_name`` keeps a BertForSequenceClassification classifier as that head;
    ``label_names`` / ``label_order`` (comma-separated) declare or reorder its outputs.
    Raises ConversionError, OutputExistsError, FileNotFoundError (all but the last are
    CrildErrors)."""
    notes: List[str] = []
    hf_dir = resolve_hf_dir(hf_dir)
    check_not_an_input(out_dir, {"HF_DIR": hf_dir}, "OUT_DIR")
    cfg, sd, dictionary, lowercase = convert_hf_folder(hf_dir, head_name)
    labels, hf_names = _classifier_labels(hf_dir, sd, head_name, label_names, label_order,
                                          notes)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        ckpt = fairseq_checkpoint(cfg, sd, os.path.abspath(hf_dir),
                                  vocab_fingerprint(dictionary), labels, hf_names)
        torch.save(ckpt, os.path.join(tmp, "model.pt"))
        dictionary.save(os.path.join(tmp, "dict.txt"))
        with open(os.path.join(tmp, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
            # the vocabulary's size and fingerprint: prepare_glue.py refuses a dict.txt
            # next to this file that is not the one written here (truncated, edited)
            json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                       "crild_vocab_size": len(dictionary),
                       "crild_vocab_sha256": vocab_fingerprint(dictionary)}, f)
    return Converted(out_dir, cfg, sum(v.numel() for v in sd.values()), len(dictionary), notes)


def _classifier_labels(hf_dir: str, sd: Dict[str, Any], head: Optional[str],
                       label_names: Optional[str], label_order: Optional[str],
                       notes: List[str]) -> Tuple[Optional[List[str]], Optional[List[str]]]:
    """(names recorded for the teacher check or None, the HF id2label names or None); adds
    what was done to ``notes``. Reorders the head in ``sd`` for --label-order."""
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        hf_cfg = json.load(f)
    key = f"classification_heads.{head}.out_proj.weight"
    if head is None or key not in sd:
        if label_names or label_order:
            raise ConversionError("--label-names / --label-order need a kept classifier: pass "
                                  "--head-name NAME with a BertForSequenceClassification folder")
        if head is not None:
            notes.append(f"note: {hf_dir} has no classifier; --head-name {head} kept nothing")
        elif any("ForSequenceClassification" in str(a)
                 for a in hf_cfg.get("architectures") or []):
            notes.append("note: the HF classifier was not kept; pass --head-name glue to use "
                         "this model as a --teacher-path")
        return None, None
    n = int(sd[key].shape[0])
    hf_names = hf_id2label(hf_cfg, n, os.path.join(hf_dir, "config.json"))
    generic = hf_names is None or labels_are_generic(hf_names)
    labels = None if generic else list(hf_names)
    if label_order:
        order = split_names(label_order, "--label-order", n)
        if generic:
            raise ConversionError(f"--label-order: the classifier's id2label is "
                                  f"{hf_names or 'absent'}, so its order cannot be read; declare "
                                  "what each output means with --label-names instead")
        reorder_head(sd, head, hf_names, order)
        labels = order
        notes.append(f"labels: outputs reordered from {hf_names} to {order}")
    if label_names:
        labels = split_names(label_names, "--label-names", n)
        notes.append(f"labels: {labels} as declared by --label-names (id2label says "
                     f"{hf_names}), checked against the data's when used as a teacher")
    elif labels is not None and not label_order:
        notes.append(f"labels: {labels} (id2label), checked against the data's when used as a "
                     "teacher")
    elif labels is None and n > 1:
        said = f"id2label {hf_names} is generic" if hf_names else "config.json has no id2label"
        notes.append(f"labels: {said}: recorded as unchecked (a teacher's output i is taken as "
                     "the data's label i, with a warning); pass --label-names to have them "
                     "checked")
    return labels, hf_names

