"""A student as a Hugging Face ``BertForSequenceClassification`` or (``crild_roberta``
students) ``RobertaForSequenceClassification`` folder, parity-checked.

``BertForSequenceClassification`` computes ``classifier(dropout(pooler_output))``. Our head is
the same when ``classifier_activation`` is ``none``; the CR-ILD authors' ``relu`` head has no
counterpart in transformers' config, so such checkpoints are refused instead of exported with
different predictions. ``RobertaForSequenceClassification`` has no pooler: its classifier is
``out_proj(tanh(dense(<s>)))``, the fairseq RoBERTa head our pooler and head were made from,
so our pooler becomes ``classifier.dense`` and our head ``classifier.out_proj``. The folder
is built in a temporary sibling, loaded back with transformers, compared with our logits on
real inputs, and only then moved into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List

import torch
from torch import Tensor, nn

from fairseq_crild.export.student import (
    TOLERANCE,
    Batch,
    Classifier,
    ExportError,
    Parity,
    parity,
    require_parity,
)
from fairseq_crild.models.bert import BertClassificationHead, BertModel
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    hf_config_from_bert,
    hf_config_from_roberta,
    state_dict_to_hf,
    state_dict_to_hf_roberta,
)
from fairseq_crild.outputs import atomic_output_dir


def hf_architecture(clf: Classifier) -> str:
    """The transformers class that reproduces the student's layout."""
    if clf.input_format == "roberta":
        return "RobertaForSequenceClassification"
    return "BertForSequenceClassification"


def _roberta_head_problem(clf: Classifier) -> str:
    """Why our pooler + head would not be RoBERTa's ``out_proj(tanh(dense(<s>)))`` ('' if
    they are): a subclass could pool or classify otherwise."""
    model, dim = clf.model, clf.model.hidden_size
    head = model.classification_heads[clf.head]
    pooler = model.pooler
    if type(model).pool is not BertModel.pool:
        return f"{type(model).__name__} does not pool as tanh(dense(<s>))"
    if not (isinstance(pooler, nn.Linear) and pooler.in_features == pooler.out_features == dim):
        return f"its pooler is not a {dim} x {dim} dense layer"
    if type(head) is not BertClassificationHead or head.out_proj.in_features != dim:
        return f"head {clf.head!r} is not a single linear layer on the pooled output"
    return ""


def check_representable(clf: Classifier) -> None:
    """Refuses heads whose function the transformers class cannot express."""
    arch = hf_architecture(clf)
    if clf.model.mean_pooled:
        raise ExportError(
            f"{clf.checkpoint}: the model reads the mean of its last layer "
            f"(--sentence-pooling mean); transformers' {arch} reads the [CLS] pooler, so its "
            "predictions would differ. Export to ONNX instead (scripts/export_onnx.py), or "
            "distil with --sentence-pooling cls")
    activation = str(clf.model.cfg.classifier_activation)
    if activation != "none":
        raise ExportError(
            f"{clf.checkpoint}: head {clf.head!r} applies {activation} to the pooled output "
            f"before its linear layer (--classifier-activation {activation}); transformers' "
            f"{arch} has no such step, so its predictions would differ. "
            "Export to ONNX instead (scripts/export_onnx.py), or distil a student with "
            "--classifier-activation none")
    problem = _roberta_head_problem(clf) if clf.input_format == "roberta" else ""
    if problem:
        raise ExportError(
            f"{clf.checkpoint}: {problem}; transformers' {arch} computes "
            "out_proj(tanh(dense(<s>))), so its predictions would differ. Export to ONNX "
            "instead (scripts/export_onnx.py)")


def hf_classifier_config(clf: Classifier) -> Dict[str, Any]:
    """config.json: our sizes plus the head's labels and loss (``problem_type``)."""
    check_representable(clf)
    cfg = dataclasses.asdict(clf.model.cfg)
    d = clf.dictionary
    if clf.input_format == "roberta":
        rows = clf.model.embeddings.position_embeddings.num_embeddings
        hf = hf_config_from_roberta(cfg, len(d), d.pad(), d.bos(), d.eos(), rows)
    else:
        hf = hf_config_from_bert(cfg, len(d), d.pad())
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
    """Writes config.json, model.safetensors and the vocabulary into an existing ``folder``:
    BERT: vocab.txt (fairseq order: ids agree) and tokenizer_config.json, whose
    ``model_max_length`` is the training ``--max-positions`` (so ``truncation=True`` cuts
    where training did); RoBERTa: fairseq's dict.txt (ids are its indices; the text is
    BPE-encoded as meta.json's ``bpe`` says)."""
    from safetensors.torch import save_file

    hf_cfg = hf_classifier_config(clf)
    model, d = clf.model, clf.dictionary
    if clf.input_format == "roberta":
        sd = state_dict_to_hf_roberta(model.state_dict(), model.num_layers, clf.head)
    else:
        sd = state_dict_to_hf(model.state_dict(), model.num_layers, clf.head)
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_cfg, f, indent=2)
    if clf.input_format == "roberta":
        d.save(os.path.join(folder, "dict.txt"))
        return
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.writelines(d[i] + "\n" for i in range(len(d)))
    with open(os.path.join(folder, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": clf.lowercase,
                   "model_max_length": clf.input_length}, f, indent=2)


def hf_model(folder: str, architecture: str) -> nn.Module:
    """The folder as transformers' ``architecture`` loads it, in eval mode; missing or unused
    weights are refused (a silently re-initialised layer would pass no parity check anyway,
    but this names it)."""
    try:
        import transformers
    except ImportError:
        raise ExportError("the parity check needs transformers: pip install -e '.[export]'"
                          ) from None
    transformers.utils.logging.disable_progress_bar()
    model, info = getattr(transformers, architecture).from_pretrained(
        folder, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ExportError(f"transformers did not load the export cleanly: {problems}")
    return model.eval()


@torch.no_grad()
def hf_logits(folder: str, batches: List[Batch],
              architecture: str = "BertForSequenceClassification") -> List[Tensor]:
    """Logits of the folder as transformers loads it (refusing missing or unused weights)."""
    model = hf_model(folder, architecture)
    return [model(**b).logits.float() for b in batches]


def export_hf_classifier(clf: Classifier, out_dir: str, batches: List[Batch],
                         overwrite: bool = False, tolerance: float = TOLERANCE) -> Parity:
    """Writes ``out_dir`` only if transformers reproduces our logits within ``tolerance``."""
    check_representable(clf)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        write_hf_classifier(clf, tmp)
        result = parity(clf, batches, hf_logits(tmp, batches, hf_architecture(clf)))
        require_parity(result.max_abs_diff, f"{out_dir} (transformers)", tolerance)
    return result
