"""The pipeline report's contents, against plain-Python references.

Dev predictions come from the report's inference pass over the binarised dev split and must
equal the hub's (GlueClassifier on the raw dev.tsv text); baseline, agreement and every metric
are recomputed here from the TSV labels with textbook formulas; stage commands, hyper-
parameters and loss terms are read from hand-written fairseq logs; the figure's panels are
read back from matplotlib.
"""

import csv
import json
import math
import os

import pytest

from fairseq_crild.pipeline import dev_analysis as dev
from fairseq_crild.pipeline.report import (
    dev_outputs,
    dev_summary,
    last_loss_terms,
    parse_command,
    plot_curves,
    render_markdown,
    stage_command,
    train_term_curves,
)
from tests.helpers_export import data_dictionary, one_thread, save_student  # noqa: F401

NAMES = ["entailment", "not_entailment"]


# ----------------------------------------------------------------- plain-Python references


def ref_binary(preds, labels, positive):
    """accuracy, F1 of ``positive``, MCC (x100) with the textbook formulas."""
    n = len(labels)
    acc = sum(p == y for p, y in zip(preds, labels)) / n
    tp = sum(p == positive and y == positive for p, y in zip(preds, labels))
    fp = sum(p == positive and y != positive for p, y in zip(preds, labels))
    fn = sum(p != positive and y == positive for p, y in zip(preds, labels))
    tn = n - tp - fp - fn
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / den if den else 0.0
    return {"accuracy": 100 * acc, "f1": 100 * f1, "mcc": 100 * mcc}


def ref_pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def dev_rows(glue_rte):
    with open(os.path.join(glue_rte, "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows


# ----------------------------------------------------------------- dev predictions


def _split_predictions(path, data, pairs):
    """Sharpens the head (weights x1000, bias 0) and moves its bias so that about half of
    these dev pairs fall on each side: a random tiny model's pooled states barely vary,
    so it would predict one class for everything and agreement and metrics would test
    nothing."""
    import torch

    from fairseq_crild.export.hub import GlueClassifier

    state = torch.load(path, weights_only=False)
    head = state["model"]
    head["classification_heads.glue.out_proj.weight"] *= 1000
    head["classification_heads.glue.out_proj.bias"].zero_()
    torch.save(state, path)
    logits = GlueClassifier.from_pretrained(path, data_name_or_path=data,
                                            max_positions=64).logits(pairs)
    m = sorted((logits[:, 0] - logits[:, 1]).tolist())
    # threshold in the widest gap of the middle third: no example near a tie, so batching
    # (padding) noise cannot flip a prediction
    i = max(range(len(m) // 3, 2 * len(m) // 3), key=lambda j: m[j + 1] - m[j])
    head["classification_heads.glue.out_proj.bias"][0] -= (m[i] + m[i + 1]) / 2
    torch.save(state, path)


@pytest.fixture(scope="module")
def two_models(tiny_env, tmp_path_factory):
    data = str(tiny_env["data"])
    d = data_dictionary(data)
    pairs = [(r["sentence1"], r["sentence2"]) for r in dev_rows(str(tiny_env["glue"] / "RTE"))]
    tmp = tmp_path_factory.mktemp("report")
    models = {}
    for name, layers, seed in (("teacher", 2, 3), ("student", 1, 5)):
        models[name] = save_student(str(tmp / f"{name}.pt"), d, 2, layers=layers,
                                    label_names=NAMES, seed=seed, activation="relu")
        _split_predictions(models[name], data, pairs)
    return models


def test_dev_outputs_equal_the_hub_and_the_summary_equals_plain_python(tiny_env, two_models):
    from fairseq_crild.export.hub import GlueClassifier

    data = str(tiny_env["data"])
    out = dev_outputs(data, two_models, max_len=64, batch_size=5)  # batches cross example 5
    rows = dev_rows(str(tiny_env["glue"] / "RTE"))
    labels = [NAMES.index(r["label"]) for r in rows]
    assert out["targets"] == labels and out["label_names"] == NAMES
    assert not out["regression"] and out["num_classes"] == 2
    pairs = [(r["sentence1"], r["sentence2"]) for r in rows]
    for name, path in two_models.items():
        hub = GlueClassifier.from_pretrained(path, data_name_or_path=data, max_positions=64)
        assert out["predictions"][name] == hub.logits(pairs).argmax(-1).tolist(), name

    names = dev.report_metric_names(["accuracy"], False, 2, "accuracy")
    assert names == ["accuracy", "f1", "mcc"]
    summary = dev_summary(out, names)
    t, s = out["predictions"]["teacher"], out["predictions"]["student"]
    assert len(set(t)) + len(set(s)) > 2, "fixture too easy: a model predicts one class"
    positive = 0  # RTE's F1 is entailment's (index 0), as the criterions log it
    for name, preds in (("teacher", t), ("student", s)):
        want = ref_binary(preds, labels, positive)
        got = summary["checkpoint_metrics"][name]
        assert got.keys() == want.keys()
        for m in want:
            assert got[m] == pytest.approx(want[m], abs=1e-9), (name, m)
    # majority class of the dev labels, predicted for every example
    counts = {c: labels.count(c) for c in set(labels)}
    majority = max(sorted(counts), key=lambda c: counts[c])
    base = summary["baseline"]
    assert base["kind"] == "majority" and base["prediction"] == majority
    assert base["label"] == NAMES[majority]
    want = ref_binary([majority] * len(labels), labels, positive)
    for m in want:
        assert base["metrics"][m] == pytest.approx(want[m], abs=1e-9), m
    assert base["metrics"]["accuracy"] == pytest.approx(100 * max(counts.values()) / len(labels))
    agree = sum(a == b for a, b in zip(t, s)) / len(t)
    assert 0 < agree < 1, "fixture too easy: the models agree everywhere or nowhere"
    assert summary["agreement"] == {"kind": "same_class", "value": pytest.approx(100 * agree),
                                    "examples": len(labels)}
    assert summary["positive_class"] == "entailment" and summary["examples"] == len(labels)


def test_constant_baseline_and_agreement_cases():
    # ties: the lowest label index wins; three classes: no F1
    names = dev.report_metric_names(["accuracy"], False, 3)
    assert names == ["accuracy", "mcc"]
    base = dev.constant_baseline([2, 1, 2, 1, 0], names, False, 3, ["a", "b", "c"])
    assert base["prediction"] == 1 and base["label"] == "b"
    assert base["metrics"] == {"accuracy": pytest.approx(40.0), "mcc": 0.0}
    # regression: the mean dev score; a constant has no correlation (counted 0)
    targets = [0.5, 3.0, 4.5, 1.0, 2.5]
    rnames = dev.report_metric_names(["pearson", "spearman"], True, 1, "pearson_spearman")
    assert rnames == ["pearson", "spearman", "pearson_spearman"]
    base = dev.constant_baseline(targets, rnames, True, 1)
    assert base["kind"] == "mean" and base["prediction"] == pytest.approx(sum(targets) / 5)
    assert base["metrics"] == {"pearson": 0.0, "spearman": 0.0, "pearson_spearman": 0.0}
    teacher, student = [0.1, 2.9, 4.0, 1.5, 2.0], [0.4, 2.0, 4.4, 0.9, 2.8]
    agree = dev.agreement(teacher, student, True)
    assert agree["kind"] == "pearson"
    assert agree["value"] == pytest.approx(100 * ref_pearson(teacher, student), abs=1e-9)
    got = dev.task_metrics(student, targets, rnames, True, 1)
    assert got["pearson"] == pytest.approx(100 * ref_pearson(student, targets), abs=1e-9)
    assert got["spearman"] == pytest.approx(100 * 0.9)  # ranks 1 3 5 2 4 vs 1 4 5 2 3
    assert got["pearson_spearman"] == pytest.approx((got["pearson"] + got["spearman"]) / 2)
    with pytest.raises(ValueError, match="3 teacher predictions for 2"):
        dev.agreement([0, 1, 1], [0, 1], False)
    with pytest.raises(ValueError, match="no labels"):
        dev.constant_baseline([], names, False, 3)


# ----------------------------------------------------------------- logs: commands, loss terms


CMD1 = ("/venv/bin/python -m fairseq_cli.train data/RTE --user-dir fairseq_crild --seed 2 "
        "--criterion cr_ild --ild-preset cr_ild --lr 3e-05 --batch-size 32 "
        "--adam-betas (0.9,0.999) --drop-last-train-batch --max-update 4 --cpu")


def _inner(update, **terms):
    rec = {"epoch": 1, **{k: str(v) for k, v in terms.items()}, "num_updates": str(update)}
    return f"2026-01-01 00:00:00 | INFO | train_inner | {json.dumps(rec)}\n"


def test_stage_command_hyperparameters_and_loss_terms(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "# " + CMD1 + "\n"
        + _inner(2, loss=0.5, loss_ild=0.4, loss_cons=0.1, w_cons=0.05, lam=0.8)
        + "2026-01-01 00:00:01 | INFO | fairseq_cli.train | end of epoch 1\n"
        + "# " + CMD1.replace("--seed 2", "--seed 9") + "\n"  # a resumed launch
        + _inner(4, loss=0.25, loss_ild=0.2, loss_cons=0.05, w_cons=0.1, lam=0.7),
        encoding="utf-8")
    cmd = stage_command(str(log))
    assert cmd["command"] == CMD1 and cmd["launches"] == 2  # the first launch's command
    hp = cmd["hyperparameters"]
    assert hp["seed"] == "2" and hp["lr"] == "3e-05" and hp["batch-size"] == "32"
    assert hp["adam-betas"] == "(0.9,0.999)" and hp["drop-last-train-batch"] is True
    assert hp["cpu"] is True and hp["ild-preset"] == "cr_ild" and "user-dir" not in hp
    assert parse_command(CMD1)["user-dir"] == "fairseq_crild"
    terms = last_loss_terms(str(log))
    assert terms == {"num_updates": 4.0, "record": "train_inner",
                     "terms": {"loss": 0.25, "loss_ild": 0.2, "loss_cons": 0.05,
                               "w_cons": 0.1}}
    assert train_term_curves(str(log)) == {"loss": [(2.0, 0.5), (4.0, 0.25)],
                                           "loss_ild": [(2.0, 0.4), (4.0, 0.2)],
                                           "loss_cons": [(2.0, 0.1), (4.0, 0.05)]}
    # fairseq's simple format, and an epoch-end train record as the last one
    log.write_text("# x\n2026 | INFO | train | epoch 001 | loss 0.3 | loss_qkv 0.2 | "
                   "num_updates 6\n", encoding="utf-8")
    assert last_loss_terms(str(log)) == {"num_updates": 6.0, "record": "train",
                                         "terms": {"loss": 0.3, "loss_qkv": 0.2}}
    assert stage_command(str(tmp_path / "none.log")) == {"command": None, "launches": 0,
                                                        "hyperparameters": {}}


# ----------------------------------------------------------------- figure and markdown


def test_figure_has_one_panel_per_stage(tmp_path):
    png = tmp_path / "dev_curve.png"
    panels = [
        {"title": "teacher: dev accuracy", "metric": "accuracy",
         "dev": {"teacher": [(2, 50.0), (4, 60.0)]}, "baseline": ("majority class (x)", 52.0),
         "loss": {"teacher training loss": [(2, 0.7), (4, 0.6)]}},
        {"title": "stage 1 (cr_ild): ILD training loss terms", "metric": "accuracy",
         "dev": None, "baseline": None,
         "loss": {"loss": [(2, 0.5), (4, 0.4)], "loss_qkv": [(2, 0.5), (4, 0.4)]}},
        {"title": "stage 2 (kd, cr_ild): dev accuracy", "metric": "accuracy",
         "dev": {"student": [(2, 48.0), (4, 55.0)]}, "baseline": ("majority class (x)", 52.0),
         "loss": {"stage 2 training loss": [(2, 1.2), (4, 0.9)]}},
    ]
    summary = plot_curves(panels, str(png))
    assert png.stat().st_size > 1000
    assert [p["title"] for p in summary] == [p["title"] for p in panels]
    assert summary[0] == {"title": "teacher: dev accuracy", "ylabel": "dev accuracy",
                          "lines": ["teacher", "majority class (x)"],
                          "ylabel_right": "training loss",
                          "lines_right": ["teacher training loss"]}
    assert summary[1]["ylabel"] == "training loss" and summary[1]["ylabel_right"] is None
    assert summary[1]["lines"] == ["loss", "loss_qkv"]
    assert summary[2]["lines"] == ["student", "majority class (x)"]
    assert summary[2]["lines_right"] == ["stage 2 training loss"]


def test_markdown_shows_baseline_agreement_stages_and_loss_terms():
    r = {"task": "RTE", "method": "cr_ild", "seed": 1, "budget": "smoke", "setting": "full",
         "metric": "accuracy", "metric_names": ["accuracy", "f1", "mcc"],
         "teacher_dev": 60.0, "student_dev": 55.0,
         "teacher_metrics": {"accuracy": 60.0, "f1": 61.0, "mcc": 20.0},
         "student_metrics": {"accuracy": 55.0, "f1": 50.0, "mcc": 10.0},
         "params": {"teacher": 2e6, "student": 1e6}, "wall_s": {"teacher": 1.0},
         "dev": {"examples": 24, "positive_class": "entailment",
                 "baseline": {"kind": "majority", "prediction": 1, "label": "not_entailment",
                              "metrics": {"accuracy": 52.5, "f1": 0.0, "mcc": 0.0}},
                 "checkpoint_metrics": {"teacher": {"accuracy": 58.0, "f1": 1.0, "mcc": 2.0},
                                        "student": {"accuracy": 55.0, "f1": 3.0, "mcc": 4.0}},
                 "agreement": {"kind": "same_class", "value": 87.5, "examples": 24}},
         "stages": {"teacher": {"checkpoint": "t/checkpoint_last.pt", "launches": 1,
                                "command": "python -m fairseq_cli.train --lr 2e-05",
                                "hyperparameters": {"lr": "2e-05", "cpu": True}},
                    "stage2": {"checkpoint": "s2/checkpoint_best.pt", "launches": 2,
                               "command": "python -m fairseq_cli.train --lr 3e-05",
                               "hyperparameters": {"lr": "3e-05"}}},
         "stage1_loss_terms": {"num_updates": 4.0, "record": "train",
                               "terms": {"loss": 0.25, "loss_qkv": 0.125}}}
    md = render_markdown(r)
    assert "| | majority class (not_entailment) | teacher | student |" in md
    assert "| dev accuracy (best eval, selection metric) | 52.50 | 60.00 | 55.00 |" in md
    assert "| dev f1 (best eval) | 0.00 | 61.00 | 50.00 |" in md
    assert "| dev accuracy (checkpoint file, recomputed) | 52.50 | 58.00 | 55.00 |" in md
    assert "| dev mcc (checkpoint file, recomputed) | 0.00 | 2.00 | 4.00 |" in md
    assert "24 examples): **87.50**" in md
    assert "| checkpoint | t/checkpoint_last.pt | s2/checkpoint_best.pt |" in md
    assert "| --lr | 2e-05 | 3e-05 |" in md and "| --cpu | yes | - |" in md
    assert "loss 0.25, loss_qkv 0.125" in md
    assert "stage2 (launched 2 times: resumed):" in md
    assert "```\npython -m fairseq_cli.train --lr 3e-05\n```" in md


def test_teacher_figures_are_those_of_the_distilled_checkpoint():
    """Label noise distils the teacher's checkpoint_last.pt: its dev figures are the ones the
    report's dev pass measured on it, not the best logged evaluation (kept aside)."""
    from fairseq_crild.pipeline.report import distilled_teacher_dev

    logged = {"best": 83.0, "metrics": {"pearson": 83.0, "spearman": 82.5}}
    dev_fields = {"checkpoint_metrics": {"teacher": {"pearson": 81.7314, "spearman": 81.4775},
                                         "student": {"pearson": 76.7, "spearman": 76.5}}}
    names = ["pearson", "spearman"]
    last = distilled_teacher_dev("/r/teachers/x/checkpoint_last.pt", logged, dev_fields,
                                 "pearson", names)
    assert last == {"teacher_dev": 81.73, "teacher_best_dev": 83.0,
                    "teacher_metrics": {"pearson": 81.73, "spearman": 81.48}}
    best = distilled_teacher_dev("/r/teachers/x/checkpoint_best.pt", logged, dev_fields,
                                 "pearson", names)
    assert best == {"teacher_dev": 83.0, "teacher_metrics": logged["metrics"]}
    brought = distilled_teacher_dev("/elsewhere/teacher.pt", {"best": None, "metrics": {}},
                                    dev_fields, "pearson", names)
    assert brought["teacher_dev"] == 81.73
