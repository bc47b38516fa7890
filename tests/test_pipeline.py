"""run_pipeline.py end to end on a tiny random BERT and a slice of real RTE."""

import json
import os

import pytest

from fairseq_crild.pipeline.ild_curves import stage1_curves
from fairseq_crild.pipeline.report import train_loss_curve
from tests.conftest import run_script


def test_pipeline_cr_ild_smoke(tiny_env, tmp_path):
    out = tmp_path / "pipe"
    args = ["scripts/run_pipeline.py", "--task", "rte", "--method", "cr_ild", "--glue-dir",
            str(tiny_env["glue"]), "--out", str(out), "--base", str(tiny_env["hf"]),
            "--budget", "smoke", "--student-layers", "2", "--seed", "2"]
    first = run_script(*args)
    run_dir = out / "runs" / "RTE" / "cr_ild" / "seed2"
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("task", "method", "seed", "metric", "teacher_dev", "student_dev",
                "teacher_metrics", "student_metrics", "params", "wall_s", "inference"):
        assert key in report, key
    assert report["task"] == "RTE" and report["method"] == "cr_ild" and report["seed"] == 2
    assert report["metric"] == "accuracy" and 0 <= report["student_dev"] <= 100
    assert set(report["wall_s"]) == {"teacher", "stage1", "stage2"}
    assert report["params"]["student"] < report["params"]["teacher"]
    assert report["inference"]["speedup"] > 0
    assert (run_dir / "dev_curve.png").stat().st_size > 1000
    # stage 1 has no head to evaluate: its panel is the ILD training loss (logged every 2)
    stage1_loss = train_loss_curve(str(run_dir / "stage1" / "train.log"))
    assert stage1_loss and stage1_loss[0][0] == 2.0 and all(v >= 0 for _, v in stage1_loss)
    md = (run_dir / "report.md").read_text()
    assert "| teacher | student |" in md and "| teacher | student |" in first.stdout
    _check_report_contents(report, md, run_dir, tiny_env)
    # a rerun reuses every finished stage
    again = run_script(*args)
    assert again.stdout.count("already done") == 3
    # another method reuses the teacher and data of the same --out
    other = run_script(*[a if a != "cr_ild" else "finetune" for a in args])
    assert "[teacher] already done" in other.stdout
    finetune = json.loads((out / "runs" / "RTE" / "finetune" / "seed2" / "report.json"
                           ).read_text())
    assert finetune["wall_s"].keys() == {"teacher", "stage2"}
    assert list(finetune["stages"]) == ["teacher", "stage2"]
    assert finetune["stage1_loss_terms"] == {} and finetune["stage1_ild_curves"] == {}
    assert [p["title"] for p in finetune["figure"]["panels"]] == [
        "teacher: dev accuracy", "stage 2 (glue_ce, finetune): dev accuracy"]
    assert os.path.isfile(out / "base" / "dict.txt")


def test_pipeline_label_noise_distils_from_the_last_teacher(tiny_env, tmp_path):
    """Label noise as the authors run it: flips drawn from the run's seed in every stage, a
    teacher per seed, and the students distil from its checkpoint_last.pt."""
    out = tmp_path / "noise"
    run_script("scripts/run_pipeline.py", "--task", "RTE", "--method", "kd", "--glue-dir",
               str(tiny_env["glue"]), "--out", str(out), "--base", str(tiny_env["hf"]),
               "--budget", "smoke", "--student-layers", "2", "--seed", "3",
               "--setting", "label_noise", "--quiet")
    run_dir = out / "runs" / "RTE-label_noise" / "kd" / "seed3"
    report = json.loads((run_dir / "report.json").read_text())
    teacher_dir = out / "teachers" / "RTE-smoke-label_noise-seed3"
    assert report["setting"] == "label_noise"
    assert report["teacher_checkpoint"] == str(teacher_dir / "checkpoint_last.pt")
    for log in (teacher_dir / "train.log", run_dir / "stage2" / "train.log"):
        text = log.read_text()
        assert "--label-noise 0.3" in text.splitlines()[0]  # the stage's command line
        assert "independent, data seed 3)" in text  # the task's draw, from --seed
    stage2_cmd = (run_dir / "stage2" / "train.log").read_text().splitlines()[0]
    assert f"--teacher-path {teacher_dir / 'checkpoint_last.pt'}" in stage2_cmd


def _check_report_contents(report, md, run_dir, tiny_env):
    """The report's contents against plain Python: the majority baseline from dev.tsv's labels,
    agreement and metrics from the hub's predictions of the two checkpoints the report
    names, commands from the train.logs, the last logged stage-1 loss terms."""
    import csv

    from fairseq_crild.export.hub import GlueClassifier

    names = ["entailment", "not_entailment"]
    with open(tiny_env["glue"] / "RTE" / "dev.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    labels = [names.index(r["label"]) for r in rows]
    majority = min((0, 1), key=lambda c: (-labels.count(c), c))  # ties: lowest index
    base = report["dev"]["baseline"]
    assert base["kind"] == "majority" and base["label"] == names[majority]
    assert base["metrics"]["accuracy"] == pytest.approx(100 * labels.count(majority) / len(rows))
    assert base["metrics"]["mcc"] == 0.0
    assert report["metric_names"] == ["accuracy", "f1", "mcc"]

    pairs = [(r["sentence1"], r["sentence2"]) for r in rows]
    preds = {}
    for who in ("teacher", "student"):
        clf = GlueClassifier.from_pretrained(report[f"{who}_checkpoint"])
        preds[who] = clf.logits(pairs).argmax(-1).tolist()
        acc = 100 * sum(p == y for p, y in zip(preds[who], labels)) / len(labels)
        assert report["dev"]["checkpoint_metrics"][who]["accuracy"] == pytest.approx(acc)
        # checkpoint_best.pt re-evaluated scores the best logged evaluation (2 decimals)
        assert acc == pytest.approx(report[f"{who}_dev"], abs=0.006)
        assert set(report[f"{who}_metrics"]) == {"accuracy", "f1", "mcc"}
    agree = 100 * sum(a == b for a, b in zip(preds["teacher"], preds["student"])) / len(rows)
    assert report["dev"]["agreement"]["value"] == pytest.approx(agree)
    assert f"{len(rows)} examples): **{agree:.2f}**" in md

    stages = report["stages"]
    assert list(stages) == ["teacher", "stage1", "stage2"]
    for name, st in stages.items():
        log = os.path.join(os.path.dirname(st["checkpoint"]), "train.log")
        first = open(log, encoding="utf-8").readline()
        assert first == "# " + st["command"] + "\n" and st["launches"] == 1
        assert f"```\n{st['command']}\n```" in md and st["checkpoint"] in md
    assert stages["stage1"]["checkpoint"] == str(run_dir / "stage1" / "checkpoint_last.pt")
    assert stages["stage2"]["checkpoint"] == report["student_checkpoint"]
    assert stages["teacher"]["hyperparameters"]["lr"] == "2e-05"  # the smoke budget's
    assert stages["stage1"]["hyperparameters"]["ild-preset"] == "cr_ild"
    assert stages["stage2"]["hyperparameters"]["temperature"] == "2"
    assert "| --lr | 2e-05 | 3e-05 | 3e-05 |" in md

    last = None  # the last training record of stage 1's log, read with json
    for line in open(run_dir / "stage1" / "train.log", encoding="utf-8"):
        for kind in ("| train_inner | ", "| train | "):
            if kind in line:
                rec = json.loads(line.split(kind, 1)[1])
                last = {k.split("train_", 1)[-1] if kind == "| train | " else k: float(v)
                        for k, v in rec.items() if "loss" in k}
    terms = report["stage1_loss_terms"]["terms"]
    assert {"loss", "loss_ild", "loss_qkv"} <= set(terms)
    assert {k: v for k, v in terms.items() if k != "w_cons"} == last

    panels = report["figure"]["panels"]
    assert [p["title"] for p in panels] == ["teacher: dev accuracy",
                                            "stage 1 (cr_ild): ILD training loss terms",
                                            "stage 2 (kd, cr_ild): dev accuracy"]
    line = f"majority class ({names[majority]})"
    assert line in panels[0]["lines"] and line in panels[2]["lines"]
    assert panels[2]["lines_right"] == ["stage 2 training loss"]
    assert "loss_qkv" in panels[1]["lines"]
    # stage 1's ILD curves travel in the report (results/ keeps no logs): here no probes ran
    stored = report["stage1_ild_curves"]
    assert list(stored) == ["train_inner"]
    assert [tuple(p) for p in stored["train_inner"]] == stage1_curves(
        str(run_dir / "stage1" / "train.log"))["train_inner"]
