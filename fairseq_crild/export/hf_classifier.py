"""A student as a Hugging Face ``BertForSequenceClassification`` folder, parity-checked.

``transformers`` computes ``classifier(dropout(pooler_output))``. Our head is the same when
``classifier_activation`` is ``none``; the CR-ILD authors' ``relu`` head has no counterpart in
transformers' config, so such checkpoints are refused instead of exported with different
predictions. The folder is built in a temporary sibling, loaded back with transformers,
compared with our logits on real inputs, and only then moved into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List

import torch
from torch import Tensor

from fairseq_crild.export.student import (
    TOLERANCE,
    Batch,
    Classifier,
    ExportError,
    Parity,
    parity,
    require_parity,
)
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    hf_config_from_bert,
    state_dict_to_hf,
)
from fairseq_crild.outputs import atomic_output_dir


def check_representable(clf: Classifier) -> None:
    """Refuses heads whose function BertForSequenceClassification cannot express."""
    activation = str(clf.model.cfg.classifier_activation)
    if activation != "none":
        raise ExportError(
            f"{clf.checkpoint}: head {clf.head!r} applies {activation} to the pooled output "
            f"before its linear layer (--classifier-activation {activation}); transformers' "
            "BertForSequenceClassification has no such step, so its predictions would differ. "
            "Export to ONNX instead (scripts/export_onnx.py), or distil a student with "
            "--classifier-activation none")


def hf_classifier_config(clf: Classifier) -> Dict[str, Any]:
    """config.json: our sizes plus the head's labels and loss (``problem_type``)."""
    check_representable(clf)
    cfg = dataclasses.asdict(clf.model.cfg)
    hf = hf_config_from_bert(cfg, len(clf.dictionary), clf.dictionary.pad())
    id2label = clf.id2label
    hf.update({
        "num_labels": clf.num_labels,
        "id2label": {str(i): name for i, name in id2label.items()},
        "label2id": {name: i for i, name in id2label.items()},
        "problem_type": clf.problem_type,
    })
    if clf.glue_task:
        hf["finetuning_task"] = clf.glue_task
    return hf


def write_hf_classifier(clf: Classifier, folder: str) -> None:
    """Writes config.json, model.safetensors, vocab.txt (fairseq order: ids agree) and
    tokenizer_config.json into an existing ``folder``."""
    from safetensors.torch import save_file

    hf_cfg = hf_classifier_config(clf)
    sd = state_dict_to_hf(clf.model.state_dict(), clf.model.num_layers, clf.head)
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_cfg, f, indent=2)
    d = clf.dictionary
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.writelines(d[i] + "\n" for i in range(len(d)))
    with open(os.path.join(folder, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": clf.lowercase,
                   "model_max_length": clf.model.max_positions()}, f, indent=2)


@torch.no_grad()
def hf_logits(folder: str, batches: List[Batch]) -> List[Tensor]:
    """Logits of the folder as transformers loads it (refusing missing or unused weights)."""
    try:
        import transformers
    except ImportError:
        raise ExportError("the parity check needs transformers: pip install -e '.[export]'"
                          ) from None
    transformers.utils.logging.disable_progress_bar()
    model, info = transformers.BertForSequenceClassification.from_pretrained(
        folder, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ExportError(f"transformers did not load the export cleanly: {problems}")
    model.eval()
    return [model(**b).logits.float() for b in batches]


def export_hf_classifier(clf: Classifier, out_dir: str, batches: List[Batch],
                         overwrite: bool = False, tolerance: float = TOLERANCE) -> Parity:
    """Writes ``out_dir`` only if transformers reproduces our logits within ``tolerance``."""
    check_representable(clf)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        write_hf_classifier(clf, tmp)
        result = parity(clf, batches, hf_logits(tmp, batches))
        require_parity(result.max_abs_diff, f"{out_dir} (transformers)", tolerance)
    return result
