"""scripts/export_hf_classifier.py: transformers reproduces the student's predictions."""

import json
import os
import re

import pytest
import torch

from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.models.loading import load_bert
from tests.conftest import run_script
from tests.helpers_bert import rte_pairs
from tests.helpers_export import (
    data_dictionary,
    one_thread,  # noqa: F401  (autouse)
    save_student,
)

transformers = pytest.importorskip("transformers")

import scripts.export_hf_classifier as export  # noqa: E402

RTE_LABELS = ["entailment", "not_entailment"]


@pytest.fixture(scope="module")
def trained(tiny_env):
    """A tiny student after 2 real glue_ce updates (fairseq saves its task_state)."""
    save = tiny_env["base"] / "export-student"
    run_script("-m", "fairseq_cli.train", str(tiny_env["data"]), "--user-dir", "fairseq_crild",
               "--task", "distill_glue", "--arch", "bert_tiny", "--criterion", "glue_ce",
               "--cpu", "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3",
               "--batch-size", "8", "--max-update", "2", "--no-epoch-checkpoints",
               "--disable-validation", "--save-dir", str(save), "--seed", "1",
               env={**os.environ, "OMP_NUM_THREADS": "1"})
    return str(save / "checkpoint_last.pt")


def _export(capsys, *args):
    rc = export.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _diff(stdout):
    return float(re.search(r"max \|diff\| of logits (\S+)", stdout).group(1))


def test_transformers_predicts_like_the_student(tiny_env, trained, tmp_path, capsys):
    out = tmp_path / "hf"
    rc, stdout, stderr = _export(capsys, trained, out, "--data", tiny_env["data"])
    assert rc == 0, stderr
    assert _diff(stdout) <= 1e-4
    assert "24 examples" in stdout and "same predicted class 24/24" in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_labels"] == 2 and cfg["problem_type"] == "single_label_classification"
    assert cfg["id2label"] == {"0": "entailment", "1": "not_entailment"}
    assert cfg["finetuning_task"] == "RTE"

    # independently of the script: the folder's own tokenizer on raw RTE pairs
    dictionary = data_dictionary(str(tiny_env["data"]))
    ours, _ = load_bert(trained, dictionary)
    ours.eval()
    hf = transformers.BertForSequenceClassification.from_pretrained(str(out)).eval()
    tok = transformers.BertTokenizer.from_pretrained(str(out))
    pairs = rte_pairs(5)
    batch = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True,
                max_length=64, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        theirs = hf(**batch).logits
        mine, _ = ours(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                       classification_head_name="glue")
    assert (theirs - mine).abs().max().item() <= 1e-4
    assert hf.config.id2label[int(theirs[0].argmax())] in RTE_LABELS


def test_regression_head_exports_as_regression(tiny_env, tmp_path, capsys):
    d = data_dictionary(str(tiny_env["data"]))
    ckpt = save_student(str(tmp_path / "sts.pt"), d, 1, layers=3, glue_task="STS-B")
    out = tmp_path / "hf"
    dict_path = tiny_env["data"] / "input0" / "dict.txt"
    rc, stdout, stderr = _export(capsys, ckpt, out, "--dict", dict_path)
    assert rc == 0, stderr
    assert _diff(stdout) <= 1e-4 and "random word-piece pairs" in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_labels"] == 1 and cfg["problem_type"] == "regression"
    hf = transformers.BertForSequenceClassification.from_pretrained(str(out)).eval()
    ids = torch.tensor([[d.bos(), 10, 11, d.eos(), 12, d.eos(), d.pad()]])
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=ids.ne(d.pad()).long()).logits
    ours, _ = load_bert(ckpt, load_bert_dictionary(str(dict_path)))
    with torch.no_grad():
        mine, _ = ours.eval()(ids, classification_head_name="glue")
    assert theirs.shape == (1, 1) and (theirs - mine).abs().max().item() <= 1e-4


def test_refusals_leave_nothing_behind(tiny_env, trained, tmp_path, capsys, monkeypatch):
    d = data_dictionary(str(tiny_env["data"]))
    data = tiny_env["data"]
    out = tmp_path / "hf"

    relu = save_student(str(tmp_path / "relu.pt"), d, 2, activation="relu",
                        label_names=RTE_LABELS)
    rc, _, err = _export(capsys, relu, out, "--data", data)
    assert rc == 2 and "relu" in err and "export_onnx.py" in err and not out.exists()

    two = save_student(str(tmp_path / "two.pt"), d, 2, head_names=("glue", "other"))
    rc, _, err = _export(capsys, two, out, "--data", data)
    assert rc == 2 and "--head-name" in err and not out.exists()

    rc, _, err = _export(capsys, tiny_env["ckpt"] / "model.pt", out, "--data", data)
    assert rc == 2 and "no classification head" in err

    wrong = save_student(str(tmp_path / "wrong.pt"), d, 2, label_names=["yes", "no"])
    rc, _, err = _export(capsys, wrong, out, "--data", data)
    assert rc == 2 and "trained with labels ['yes', 'no']" in err

    three = save_student(str(tmp_path / "three.pt"), d, 3)
    rc, _, err = _export(capsys, three, out, "--data", data)
    assert rc == 2 and "3 outputs but the task has 2 labels" in err and not out.exists()

    # an export that does not reproduce our logits is not kept
    import fairseq_crild.export.hf_classifier as hfc

    real = hfc.hf_logits
    monkeypatch.setattr(hfc, "hf_logits", lambda *a: [x + 1e-3 for x in real(*a)])
    rc, _, err = _export(capsys, trained, out, "--data", data)
    assert rc == 2 and "exceeds 0.0001" in err and not out.exists()
    monkeypatch.undo()
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # no temporary folders

    # an existing folder is kept unless --overwrite
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc, _, err = _export(capsys, trained, out, "--data", data)
    assert rc == 2 and "--overwrite" in err and (out / "keep.txt").exists()
    rc, _, err = _export(capsys, trained, out, "--data", data, "--overwrite")
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_stage1_ild_student_is_refused_unless_allowed(tiny_env, trained, tmp_path, capsys):
    """A stage-1 ILD student's head was never trained: refused as a classifier export by both
    exporters, naming the override (the hub's spelling); with it, exported."""
    import scripts.export_onnx as export_onnx

    state = torch.load(trained, map_location="cpu", weights_only=False)
    state["task_state"]["checkpoint_role"] = "ild_student"  # as --criterion cr_ild records
    stage1 = tmp_path / "stage1.pt"
    torch.save(state, stage1)
    out = tmp_path / "hf"
    rc, _, err = _export(capsys, stage1, out, "--data", tiny_env["data"])
    assert rc == 2 and "stage-1 ILD student" in err and "--allow-any-role" in err
    assert not out.exists()
    rc = export_onnx.main([str(stage1), str(tmp_path / "m.onnx"), "--data",
                           str(tiny_env["data"])])
    err = capsys.readouterr().err
    assert rc == 2 and "stage-1 ILD student" in err and not (tmp_path / "m.onnx").exists()
    rc, stdout, err = _export(capsys, stage1, out, "--data", tiny_env["data"],
                              "--allow-any-role")
    assert rc == 0, err
    assert _diff(stdout) <= 1e-4
