"""crild_roberta students through both exports: transformers' RobertaForSequenceClassification
and ONNX (``input_ids`` + ``attention_mask``) reproduce our logits on RoBERTa-layout inputs."""

import json
import re

import pytest
import torch

from fairseq_crild.data.roberta_data import load_roberta_dictionary
from fairseq_crild.models.loading import load_bert
from tests.helpers_export import (
    one_thread,  # noqa: F401  (autouse)
    save_student,
)
from tests.helpers_roberta import build_roberta_data

transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("sentencepiece")

import scripts.export_hf_classifier as export_hf  # noqa: E402
import scripts.export_onnx as export_onnx  # noqa: E402

LABELS = ["entailment", "not_entailment"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The tiny RoBERTa folder of test_roberta.py and a 3-layer crild_roberta student on it."""
    base = tmp_path_factory.mktemp("roberta-export")
    data = build_roberta_data(base, script=False)["data"]
    d = load_roberta_dictionary(str(data / "input0" / "dict.txt"))
    ckpt = save_student(str(base / "student.pt"), d, 2, layers=3, label_names=LABELS,
                        glue_task="RTE", roberta=True)
    return {"base": base, "data": data, "dict": d, "ckpt": ckpt}


def _run(main, capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _diff(stdout):
    return float(re.search(r"max \|diff\| of logits (\S+)", stdout).group(1))


def _padded_dev_batch(data, d):
    """The 3 shortest and 3 longest dev pairs (truncated to 128 tokens, the whole position
    table, with the real RTE rows), so rows pad."""
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(data), max_positions=128,
                                                          seed=1))
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    order = list(ds.ordered_indices())
    ids = ds.collater([ds[i] for i in order[:3] + order[-3:]])["net_input"]["src_tokens"]
    assert ids.eq(d.pad()).any() and ids[:, 0].eq(d.bos()).all()
    return ids, ids.ne(d.pad()).long()


def test_transformers_and_onnx_predict_like_the_student(env, tmp_path, capsys):
    data, d, ckpt = env["data"], env["dict"], env["ckpt"]
    hf_dir = tmp_path / "hf"
    rc, stdout, stderr = _run(export_hf.main, capsys, ckpt, hf_dir, "--data", data)
    assert rc == 0, stderr
    assert "RobertaForSequenceClassification" in stdout and _diff(stdout) <= 1e-4
    assert "24 examples" in stdout and "same predicted class 24/24" in stdout
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["model_type"] == "roberta"
    assert cfg["architectures"] == ["RobertaForSequenceClassification"]
    assert cfg["vocab_size"] == len(d) and cfg["pad_token_id"] == d.pad() == 1
    assert cfg["max_position_embeddings"] == 128 + d.pad() + 1  # our table's rows
    assert cfg["type_vocab_size"] == 1 and cfg["layer_norm_eps"] == 1e-5
    assert cfg["id2label"] == {"0": "entailment", "1": "not_entailment"}
    assert cfg["problem_type"] == "single_label_classification"
    assert (hf_dir / "dict.txt").exists() and not (hf_dir / "vocab.txt").exists()

    path = tmp_path / "student.onnx"
    rc, stdout, stderr = _run(export_onnx.main, capsys, ckpt, path, "--data", data)
    assert rc == 0, stderr
    assert _diff(stdout) <= 1e-4 and "24 examples in 3 batches" in stdout
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["input_format"] == "roberta" and meta["bpe"] == "sentencepiece"
    assert json.loads(meta["id2label"]) == {"0": "entailment", "1": "not_entailment"}

    # independently of the scripts: padded real pairs up to 128 tokens, all three models
    ids, mask = _padded_dev_batch(data, d)
    ours, _ = load_bert(ckpt, d)
    hf = transformers.RobertaForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        mine, _ = ours.eval()(ids, classification_head_name="glue")
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    onnx = torch.from_numpy(session.run(["logits"], {"input_ids": ids.numpy(),
                                                     "attention_mask": mask.numpy()})[0])
    assert ids.size(1) > 8 and mine.shape == onnx.shape == (6, 2)  # longer than the example
    assert (theirs - mine).abs().max().item() <= 1e-4
    assert (onnx - mine).abs().max().item() <= 1e-4
    assert torch.equal(theirs.argmax(-1), mine.argmax(-1))


def test_relu_head_refused_by_transformers_kept_by_onnx(env, tmp_path, capsys):
    """The CR-ILD authors' relu head: RobertaForSequenceClassification cannot express it, the
    ONNX graph can (here with the TorchScript tracer, checked on random RoBERTa pairs)."""
    d = env["dict"]
    relu = save_student(str(tmp_path / "relu.pt"), d, 2, activation="relu", label_names=LABELS,
                        roberta=True)
    out = tmp_path / "hf"
    rc, _, err = _run(export_hf.main, capsys, relu, out, "--data", env["data"])
    assert rc == 2 and "relu" in err and "RobertaForSequenceClassification" in err
    assert "export_onnx.py" in err and not out.exists()
    path = tmp_path / "relu.onnx"
    rc, stdout, err = _run(export_onnx.main, capsys, relu, path, "--dict",
                           env["data"] / "input0" / "dict.txt", "--exporter", "torchscript")
    assert rc == 0, err
    assert _diff(stdout) <= 1e-4 and "random BPE-token pairs" in stdout


def test_layout_mismatch_refused(env, tmp_path, capsys):
    """A BERT-layout student does not read RoBERTa inputs (<s> a </s></s> b </s>, no types)."""
    bert = save_student(str(tmp_path / "bert.pt"), env["dict"], 2, label_names=LABELS)
    for main, target in ((export_hf.main, tmp_path / "hf"),
                         (export_onnx.main, tmp_path / "x.onnx")):
        rc, _, err = _run(main, capsys, bert, target, "--data", env["data"])
        assert rc == 2 and "bert-layout student" in err and "roberta layout" in err
        assert not target.exists()
