"""run_pipeline.py end to end on a tiny random BERT and a slice of real RTE."""

import json
import os

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
    assert "| teacher | student |" in (run_dir / "report.md").read_text()
    assert "| teacher | student |" in first.stdout
    # a rerun reuses every finished stage
    again = run_script(*args)
    assert again.stdout.count("already done") == 3
    # another method reuses the teacher and data of the same --out
    other = run_script(*[a if a != "cr_ild" else "finetune" for a in args])
    assert "[teacher] already done" in other.stdout
    assert json.loads((out / "runs" / "RTE" / "finetune" / "seed2" / "report.json").read_text(
    ))["wall_s"].keys() == {"teacher", "stage2"}
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
