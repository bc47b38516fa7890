"""scripts/export_onnx.py: onnxruntime reproduces the student's predictions, any shape."""

import json
import os
import re

import pytest
import torch

from fairseq_crild.models.loading import load_bert
from tests.helpers_export import (
    data_dictionary,
    one_thread,  # noqa: F401  (autouse)
    save_student,
)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import scripts.export_onnx as export  # noqa: E402

RTE_LABELS = ["entailment", "not_entailment"]


def _export(capsys, *args):
    rc = export.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _diff(stdout):
    return float(re.search(r"max \|diff\| of logits (\S+)", stdout).group(1))


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _shapes_agree(path, ckpt, d, num_labels):
    """Batch and sequence sizes other than the export's example, with and without padding."""
    session = _session(path)
    ours, _ = load_bert(ckpt, d)
    ours.eval()
    g = torch.Generator().manual_seed(1)
    for batch, length in ((1, 3), (5, 17), (3, 128)):
        ids = torch.randint(d.nspecial, len(d), (batch, length), generator=g)
        ids[:, 0] = d.bos()
        if batch > 1:
            ids[0, length // 2:] = d.pad()
        types = (torch.arange(length) >= length // 3).long().expand(batch, -1).contiguous()
        mask = ids.ne(d.pad()).long()
        logits = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask":
                                          mask.numpy(), "token_type_ids": types.numpy()})[0]
        with torch.no_grad():
            mine, _ = ours(ids, token_type_ids=types, classification_head_name="glue")
        assert logits.shape == (batch, num_labels)
        assert (torch.from_numpy(logits) - mine).abs().max().item() <= 1e-4


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnxruntime_predicts_like_the_student(tiny_env, tmp_path, capsys, exporter):
    d = data_dictionary(str(tiny_env["data"]))
    # the CR-ILD authors' relu head: not expressible in transformers, fine in ONNX
    ckpt = save_student(str(tmp_path / "s.pt"), d, 2, layers=3, activation="relu",
                        label_names=RTE_LABELS, glue_task="RTE")
    out = tmp_path / "student.onnx"
    rc, stdout, stderr = _export(capsys, ckpt, out, "--data", tiny_env["data"], "--exporter",
                                 exporter)
    assert rc == 0, stderr
    assert _diff(stdout) <= 1e-4
    assert "24 examples in 3 batches" in stdout and "same predicted class 24/24" in stdout
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "token_type_ids",
                                                      "attention_mask"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["id2label"]) == {"0": "entailment", "1": "not_entailment"}
    assert meta["problem_type"] == "single_label_classification"
    assert int(meta["pad_token_id"]) == d.pad()
    _shapes_agree(out, ckpt, d, 2)


def test_regression_head(tiny_env, tmp_path, capsys):
    d = data_dictionary(str(tiny_env["data"]))
    ckpt = save_student(str(tmp_path / "sts.pt"), d, 1, glue_task="STS-B")
    out = tmp_path / "sts.onnx"
    rc, stdout, stderr = _export(capsys, ckpt, out, "--dict",
                                 tiny_env["data"] / "input0" / "dict.txt")
    assert rc == 0, stderr
    assert _diff(stdout) <= 1e-4 and "regression" in stdout
    assert _session(out).get_modelmeta().custom_metadata_map["problem_type"] == "regression"
    _shapes_agree(out, ckpt, d, 1)


def test_existing_file_and_failed_check(tiny_env, tmp_path, capsys, monkeypatch):
    d = data_dictionary(str(tiny_env["data"]))
    ckpt = save_student(str(tmp_path / "s.pt"), d, 2, label_names=RTE_LABELS)
    out = tmp_path / "student.onnx"
    out.write_bytes(b"old")
    args = [ckpt, out, "--data", tiny_env["data"], "--exporter", "torchscript"]
    rc, _, err = _export(capsys, *args)
    assert rc == 2 and "--overwrite" in err and out.read_bytes() == b"old"

    import fairseq_crild.export.onnx_export as ox

    real = ox.onnxruntime_logits
    monkeypatch.setattr(ox, "onnxruntime_logits", lambda *a: [x * 1.01 for x in real(*a)])
    rc, _, err = _export(capsys, *args, "--overwrite")
    assert rc == 2 and "exceeds 0.0001" in err and out.read_bytes() == b"old"
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["s.pt", "student.onnx"]  # no temporary leftovers

    rc, stdout, err = _export(capsys, *args, "--overwrite")
    assert rc == 0, err
    assert _session(out).get_outputs()[0].name == "logits"


def test_the_plugin_does_not_import_export_dependencies():
    """fairseq-train loads the plugin; it must run without transformers, onnx, onnxruntime."""
    from tests.conftest import run_script

    code = ("import sys, fairseq_crild; print(sorted(m for m in ('onnx', 'onnxruntime', "
            "'onnxscript', 'transformers', 'fairseq_crild.export') if m in sys.modules))")
    assert run_script("-c", code).stdout.strip().splitlines()[-1] == "[]"
