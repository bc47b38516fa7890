"""The hub-style classifier gives the predictions of the dev evaluation, from Python and CLI."""

import csv

import pytest
import torch

from fairseq_crild.export.hub import GlueClassifier
from fairseq_crild.models.loading import load_bert
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask
from tests.conftest import run_script
from tests.test_fairseq_train import teacher  # noqa: F401  (fixture: a fine-tuned tiny BERT)


@pytest.fixture(scope="module")
def classifier_ckpt(teacher):  # noqa: F811
    return teacher


def _dev_rows(tiny_env):
    with open(tiny_env["glue"] / "RTE" / "dev.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r["sentence1"], r["sentence2"]) for r in rows]


@torch.inference_mode()
def _binarised_dev_logits(tiny_env, ckpt, max_positions):
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(tiny_env["data"]),
                                                        max_positions=max_positions))
    model, _ = load_bert(str(ckpt), task.dictionary)
    model.eval()
    task.load_dataset("valid")
    ds = task.dataset("valid")
    batch = ds.collater([ds[i] for i in range(len(ds))])
    logits, _ = model(**batch["net_input"], classification_head_name="glue")
    return logits[batch["id"].argsort()]


@pytest.mark.parametrize("max_positions", [128, 24])  # 24: longest-first truncation too
def test_python_predictions_equal_the_dev_evaluation(tiny_env, classifier_ckpt, max_positions):
    clf = GlueClassifier.from_pretrained(str(classifier_ckpt), max_positions=max_positions,
                                         data_name_or_path=str(tiny_env["data"]))
    pairs = _dev_rows(tiny_env)
    ours = clf.logits(pairs, batch_size=5)
    ref = _binarised_dev_logits(tiny_env, classifier_ckpt, max_positions)
    assert ours.shape == ref.shape == (len(pairs), 2)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    labels = clf.predict(pairs)
    assert labels == [clf.labels[i] for i in ref.argmax(-1).tolist()]
    assert set(labels) <= {"entailment", "not_entailment"}
    assert torch.allclose(clf.predict_proba(pairs).sum(-1), torch.ones(len(pairs)))


def test_folder_and_trained_data_default(tiny_env, classifier_ckpt):
    # a folder + checkpoint_file, data folder read from the checkpoint's task.data
    clf = GlueClassifier.from_pretrained(str(classifier_ckpt.parent), "checkpoint_last.pt")
    assert clf.labels == ["entailment", "not_entailment"]
    with pytest.raises(ValueError, match="sentence pairs"):
        clf.predict(["a single sentence"])


def test_stage1_checkpoint_without_head_is_refused(tiny_env):
    with pytest.raises(ValueError, match="no classification head"):
        GlueClassifier.from_pretrained(str(tiny_env["ckpt"] / "model.pt"),
                                       data_name_or_path=str(tiny_env["data"]))


def test_cli_pairs_and_stdin(tiny_env, classifier_ckpt):
    pairs = _dev_rows(tiny_env)[:3]
    clf = GlueClassifier.from_pretrained(str(classifier_ckpt),
                                         data_name_or_path=str(tiny_env["data"]))
    expected = clf.predict(pairs)
    args = ["scripts/classify.py", str(classifier_ckpt), "--data", str(tiny_env["data"])]
    proc = run_script(*args, "--pair", *pairs[0], "--pair", *pairs[1], "--probs")
    lines = proc.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == expected[:2]
    assert "entailment=" in lines[0]
    stdin = "".join(f"{a}\t{b}\n" for a, b in pairs)
    proc = run_script(*args, input=stdin)
    assert proc.stdout.split() == expected
    bad = run_script(*args, input="a\tb\tc\n", check=False)
    assert bad.returncode == 2 and "<stdin>:1" in bad.stderr and "Traceback" not in bad.stderr


def test_roberta_layout_is_refused_by_name(tmp_path, classifier_ckpt):
    from tests.helpers_roberta import build_roberta_data

    data = build_roberta_data(tmp_path)["data"]
    with pytest.raises(ValueError, match="roberta folder"):
        GlueClassifier.from_pretrained(str(classifier_ckpt), data_name_or_path=str(data))
