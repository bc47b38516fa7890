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
