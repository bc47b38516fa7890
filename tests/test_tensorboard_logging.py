"""--tensorboard-logdir writes event files holding the loss terms and the dev metrics, and a
binary task's F1 is that of its positive label (RTE: entailment, index 0)."""

import os
import re

import pytest
import torch

from fairseq_crild.criterions.glue_logging import (
    positive_class,
    prediction_stats,
    reduce_glue_metrics,
)
from tests.conftest import run_script

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard extra (pip install -e '.[tensorboard]'; part of '.[test]')")

COMMON = ["--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu", "--num-workers",
          "0", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed",
          "--batch-size", "8", "--max-positions", "64", "--log-format", "simple",
          "--log-interval", "1", "--no-epoch-checkpoints", "--seed", "3"]
TINY = ["--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", "32",
        "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
        "--max-position-embeddings", "128"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def scalars(folder):
    """{tag: {step: value}} of the event files in ``folder``, read by tensorboard itself."""
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def printed(logs, tag):
    """{num_updates: {key: value}} of fairseq's simple-format progress lines: ``train_inner``
    lines start with 'epoch 001: ...', ``valid`` lines contain '| valid on '."""
    out = {}
    for line in logs.splitlines():
        if tag == "valid" and "| valid on " not in line:
            continue
        if tag == "train_inner" and not re.search(r"\| epoch \d+:\s+\d+ / \d+ ", line):
            continue
        pairs = dict(re.findall(r"(\w+)[=\s](-?[\d.]+(?:e-?\d+)?)(?=[,\s|]|$)", line))
        if "num_updates" in pairs:
            out[int(pairs["num_updates"])] = {k: float(v) for k, v in pairs.items()}
    return out


@pytest.fixture(scope="module")
def runs(tiny_env):
    """A glue_ce teacher (6 updates, dev every 3) and a stage-1 cr_ild student distilled from
    it (3 updates), both with --tensorboard-logdir."""
    base = tiny_env["base"] / "tensorboard"
    teacher = run_script("-m", "fairseq_cli.train", str(tiny_env["data"]), *COMMON, *TINY,
                         "--criterion", "glue_ce", "--finetune-from-model",
                         str(tiny_env["ckpt"] / "model.pt"), "--encoder-layers", "4",
                         "--max-update", "6", "--validate-interval-updates", "3",
                         "--best-checkpoint-metric", "accuracy",
                         "--maximize-best-checkpoint-metric", "--save-dir",
                         str(base / "teacher"), "--tensorboard-logdir", str(base / "tb_teacher"),
                         env=ENV)
    stage1 = run_script("-m", "fairseq_cli.train", str(tiny_env["data"]), *COMMON, *TINY,
                        "--criterion", "cr_ild", "--teacher-path",
                        str(base / "teacher" / "checkpoint_last.pt"), "--init-student-from",
                        str(tiny_env["ckpt"] / "model.pt"), "--ild-preset", "cr_ild",
                        "--num-relation-heads", "4", "--consistency-on-relations",
                        "--max-update", "3", "--disable-validation", "--save-dir",
                        str(base / "stage1"), "--tensorboard-logdir", str(base / "tb_stage1"),
                        env=ENV)
    return {"base": base, "teacher_logs": teacher.stdout + teacher.stderr,
            "stage1_logs": stage1.stdout + stage1.stderr}


def test_stage1_events_hold_every_loss_term(runs):
    events = scalars(runs["base"] / "tb_stage1" / "train_inner")
    shown = printed(runs["stage1_logs"], "train_inner")
    assert sorted(shown) == [1, 2, 3]
    assert {"loss", "loss_ild", "loss_qkv", "loss_cons", "w_cons", "lam"} <= set(events)
    for step in (1, 2, 3):  # every term fairseq printed, at every update, with its value
        terms = {k for k in shown[step] if k == "loss" or k.startswith("loss_")}
        logged = {k for k, v in events.items() if step in v and (k == "loss"
                                                                 or k.startswith("loss_"))}
        assert terms == logged and {"loss", "loss_qkv"} <= terms, step
        for key in terms | {"w_cons", "lam"}:
            assert events[key][step] == pytest.approx(shown[step][key], abs=1e-4), (key, step)
    assert "loss_cons" in shown[3]  # the consistency term once its weight ramps up


def _plain_rte_metrics(preds, targets):
    """Accuracy, F1 of entailment (index 0) and MCC, x100, in plain Python."""
    n = len(targets)
    tp = sum(p == 0 and t == 0 for p, t in zip(preds, targets))
    fp = sum(p == 0 and t == 1 for p, t in zip(preds, targets))
    fn = sum(p == 1 and t == 0 for p, t in zip(preds, targets))
    tn = n - tp - fp - fn
    f1_pos = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    f1_neg = 2 * tn / (2 * tn + fn + fp) if tn + fn + fp else 0.0
    denom = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    return {"accuracy": 100 * (tp + tn) / n, "f1": 100 * f1_pos, "mcc": 100 * mcc,
            "f1_not_entailment": 100 * f1_neg}


@torch.inference_mode()
def test_teacher_events_hold_the_dev_metrics_with_entailment_positive(tiny_env, runs):
    from fairseq_crild.models.loading import load_bert
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    tb = runs["base"] / "tb_teacher"
    train = scalars(tb / "train_inner")
    assert set(train["loss"]) == set(range(1, 7)) and "accuracy" in train
    valid = scalars(tb / "valid")
    shown = printed(runs["teacher_logs"], "valid")
    assert sorted(shown) == [3, 6]
    for key in ("loss", "accuracy", "f1", "mcc"):
        assert set(valid[key]) == {3, 6}, key
        for step in (3, 6):
            assert valid[key][step] == pytest.approx(shown[step][key], abs=1e-2), (key, step)

    # the last evaluation's metrics from the saved weights, by hand (RTE: entailment = 0)
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(tiny_env["data"]),
                                                        max_positions=64))
    assert task.label_names[0] == "entailment"
    model, _ = load_bert(str(runs["base"] / "teacher" / "checkpoint_last.pt"), task.dictionary)
    model.eval()
    task.load_dataset("valid")
    ds = task.dataset("valid")
    batch = ds.collater([ds[i] for i in range(len(ds))])
    logits, _ = model(**batch["net_input"], classification_head_name="glue")
    want = _plain_rte_metrics(logits.argmax(-1).tolist(), batch["target"].tolist())
    assert abs(want["f1"] - want["f1_not_entailment"]) > 1.0  # the class choice shows
    for key in ("accuracy", "f1", "mcc"):
        assert valid[key][6] == pytest.approx(want[key], abs=0.006), key


def test_positive_class_of_every_glue_task():
    from fairseq_crild.data.glue_tasks import get_task

    want = {"RTE": 0, "QNLI": 0, "MRPC": 1, "QQP": 1, "SST-2": 1, "CoLA": 1, "WNLI": 1,
            "MNLI": None, "STS-B": None}
    for name, index in want.items():
        spec = get_task(name)
        got = positive_class(spec.label_names, spec.num_classes)
        assert got == index, name
        if index is not None:
            assert spec.label_names[index] in ("entailment", "1")
    assert positive_class([], 2) == 1  # unnamed binary labels: class 1


def _reduced(logs):
    from fairseq.logging import metrics

    with metrics.aggregate(new_root=True) as agg:
        reduce_glue_metrics(logs)
        return agg.get_smoothed_values()


def test_f1_follows_the_positive_class_across_batches():
    """Summed over batches, F1 is the chosen class's (hand counts); MCC and accuracy do not
    depend on it; positive=None logs no F1."""
    preds = [0, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    targets = [0, 1, 1, 0, 0, 1, 1, 0, 1, 1]
    logits = torch.nn.functional.one_hot(torch.tensor(preds), 2).float()
    target = torch.tensor(targets)

    def run(positive):
        return _reduced([prediction_stats(logits[i:i + 4], target[i:i + 4], False, 2, False,
                                          positive=positive) for i in range(0, 10, 4)])

    tp0 = sum(p == t == 0 for p, t in zip(preds, targets))
    fp0 = sum(p == 0 and t == 1 for p, t in zip(preds, targets))
    fn0 = sum(p == 1 and t == 0 for p, t in zip(preds, targets))
    tp1 = sum(p == t == 1 for p, t in zip(preds, targets))
    assert (tp0, fp0, fn0, tp1) == (2, 2, 2, 4)
    zero, one, none = run(0), run(1), run(None)
    assert zero["f1"] == pytest.approx(round(100 * 2 * tp0 / (2 * tp0 + fp0 + fn0), 2))
    assert one["f1"] == pytest.approx(round(100 * 2 * tp1 / (2 * tp1 + fn0 + fp0), 2))
    assert zero["f1"] != one["f1"]
    assert "f1" not in none
    for key in ("accuracy", "mcc"):
        assert zero[key] == one[key] == none[key]
