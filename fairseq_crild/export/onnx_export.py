"""A student's classification head as one ONNX file, parity-checked with onnxruntime.

The graph takes what a Hugging Face BERT tokenizer returns (``input_ids``, ``token_type_ids``,
``attention_mask``; int64, batch x sequence, both axes dynamic; ``crild_roberta`` students:
``input_ids`` and ``attention_mask`` only, as RoBERTa has no token types) and returns
``logits`` (batch x labels). Unlike Hugging Face's classifiers, it reproduces any head of ours
(the ``relu`` head of the CR-ILD authors too). Label names, the loss and the padding id are
stored in the file's metadata. The file is written next to its destination, checked on real
inputs with onnxruntime, and only then moved into place.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Dict, List, Optional

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
from fairseq_crild.models.bert import BertModel
from fairseq_crild.outputs import atomic_output_file

INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
ROBERTA_INPUT_NAMES = ("input_ids", "attention_mask")
EXPORTERS = ("dynamo", "torchscript")


class OnnxClassifier(nn.Module):
    """Our forward for one head, traceable with dynamic shapes.

    ``BertModel.forward`` skips the attention mask when a batch has no padding, a
    data-dependent branch that export would freeze; here the mask is always applied (equal
    results: an all-true mask changes nothing). Positions are masked where
    ``attention_mask`` is 0 or the token is padding, as our model masks padding tokens.
    """

    def __init__(self, model: BertModel, head: str):
        super().__init__()
        self.model = model
        self.head = head
        self.pad = int(model.padding_idx)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor
                ) -> Tensor:
        keep = attention_mask.bool() & input_ids.ne(self.pad)
        return self.classify(self.model.embeddings(input_ids, token_type_ids), keep)

    def classify(self, x: Tensor, keep: Tensor) -> Tensor:
        """The layers and the head on embedded inputs (``keep``: tokens attended to)."""
        key_keep = keep[:, None, None, :]
        for layer in self.model.layers:
            x, _ = layer(x, key_keep, False, False)
        return self.model.classification_heads[self.head](self.model.pool(x, ~keep))


class OnnxRobertaClassifier(OnnxClassifier):
    """The same for ``crild_roberta``: no token types (positions come from the ids), and the
    embeddings' padded rows zeroed without ``RobertaEmbeddings.forward``'s data-dependent
    ``if`` (where there is no padding, multiplying by ones changes nothing)."""

    def forward(self, input_ids: Tensor,  # type: ignore[override]
                attention_mask: Tensor) -> Tensor:
        real = input_ids.ne(self.pad)
        x = self.model.embeddings.embed(input_ids)
        x = x * real.unsqueeze(-1).to(x.dtype)
        return self.classify(x, attention_mask.bool() & real)


def input_names(clf: Classifier) -> tuple:
    """The graph's inputs: what a tokenizer for the student's layout returns."""
    return ROBERTA_INPUT_NAMES if clf.input_format == "roberta" else INPUT_NAMES


def _wrapper(clf: Classifier) -> OnnxClassifier:
    cls = OnnxRobertaClassifier if clf.input_format == "roberta" else OnnxClassifier
    return cls(clf.model, clf.head).eval()  # export does not switch modes


def _example_inputs(clf: Classifier) -> tuple:
    """A 2 x 8 pair: sizes above 1, so export does not specialise either axis."""
    d = clf.dictionary
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(d.nspecial, len(d), (2, 8), generator=g)
    if clf.input_format == "roberta":  # <s> a a a </s> </s> b </s>
        ids[:, 0], ids[:, 4], ids[:, 5], ids[:, 7] = d.bos(), d.eos(), d.eos(), d.eos()
        return ids, torch.ones_like(ids)
    ids[:, 0], ids[:, 4], ids[:, 7] = d.bos(), d.eos(), d.eos()
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return ids, types, torch.ones_like(ids)


# torch's own chatter during export, none of it about our graph: axis names shared by the three
# inputs, the tracer reading an embedding's size, a pytree deprecation inside torch.export
_BENIGN_WARNINGS = (r"# The axis name: .* will not be used", r"Converting a tensor to a Python",
                    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                    r"You are using the legacy TorchScript-based ONNX export")


def _quiet_exporter_logs() -> None:
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "torchvision is not installed. Skipping torchvision::nms" and the like
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_graph(clf: Classifier, path: str, exporter: str = "dynamo",
                 opset: Optional[int] = None) -> None:
    """Runs ``torch.onnx.export`` (the torch.export-based exporter by default, which needs
    onnxscript; ``torchscript`` is torch's older tracer) into ``path``."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r} (choose from {', '.join(EXPORTERS)})")
    wrapper = _wrapper(clf)
    args = _example_inputs(clf)
    names = input_names(clf)
    _quiet_exporter_logs()
    with torch.no_grad(), warnings.catch_warnings():
        for message in _BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        if exporter == "dynamo":
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise ExportError("torch.onnx's exporter needs onnxscript: pip install -e "
                                  "'.[export]' (or pass --exporter torchscript)") from None
            batch = torch.export.Dim("batch")
            seq = torch.export.Dim("sequence", max=clf.model.max_positions())
            program = torch.onnx.export(
                wrapper, args, dynamo=True, input_names=list(names),
                output_names=["logits"], opset_version=opset, verbose=False,
                dynamic_shapes={name: {0: batch, 1: seq} for name in names})
            program.save(path)
        else:
            axes = {name: {0: "batch", 1: "sequence"} for name in names}
            axes["logits"] = {0: "batch"}
            torch.onnx.export(wrapper, args, path, dynamo=False, input_names=list(names),
                              output_names=["logits"], dynamic_axes=axes,
                              opset_version=opset or 17)


def metadata(clf: Classifier) -> Dict[str, str]:
    """What a deployment needs besides the graph (ONNX metadata_props are strings): RoBERTa
    layouts name their BPE and frame tokens instead of lower-casing."""
    props = {
        "fairseq_crild.head": clf.head,
        "fairseq_crild.glue_task": clf.glue_task or "",
        "problem_type": clf.problem_type,
        "id2label": json.dumps({str(i): n for i, n in clf.id2label.items()}),
        "pad_token_id": str(clf.dictionary.pad()),
        "do_lower_case": json.dumps(clf.lowercase),
        "max_position_embeddings": str(clf.model.max_positions()),
        "model_max_length": str(clf.input_length),  # training --max-positions
        "input_format": clf.input_format,
    }
    if clf.input_format == "roberta":
        d = clf.dictionary
        del props["do_lower_case"]
        props.update({"bpe": clf.bpe or "", "bos_token_id": str(d.bos()),
                      "eos_token_id": str(d.eos())})
    return props


def add_metadata(path: str, props: Dict[str, str]) -> None:
    import onnx

    model = onnx.load(path, load_external_data=False)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def onnxruntime_logits(path: str, batches: List[Batch], threads: int = 1) -> List[Tensor]:
    """The file's logits as onnxruntime (CPU, default graph optimisations) computes them."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("the parity check needs onnxruntime: pip install -e '.[export]'"
                          ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for b in batches:
        feed = {k: v.numpy() for k, v in b.items() if k in names}
        out.append(torch.from_numpy(session.run(["logits"], feed)[0]).float())
    return out


def export_onnx(clf: Classifier, path: str, batches: List[Batch], overwrite: bool = False,
                exporter: str = "dynamo", opset: Optional[int] = None,
                tolerance: float = TOLERANCE, threads: int = 1) -> Parity:
    """Writes ``path`` only if onnxruntime reproduces our logits within ``tolerance``."""
    with atomic_output_file(path, overwrite) as tmp:
        export_graph(clf, tmp, exporter, opset)
        add_metadata(tmp, metadata(clf))
        result = parity(clf, batches, onnxruntime_logits(tmp, batches, threads))
        require_parity(result.max_abs_diff, f"{path} (onnxruntime)", tolerance)
    return result
