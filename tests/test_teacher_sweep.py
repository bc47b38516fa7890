"""scripts/teacher_sweep.py on the tiny data: one row per (optimizer, lr, epochs), each row's
best and last dev figures equal to the evaluations its train.log holds, only the best
checkpoint kept, finished runs reused on a rerun."""

import json
import os

from tests.conftest import run_script


def _valid_accuracies(log_path):
    values = []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            if "| valid |" in line:
                values.append(float(json.loads(line[line.index("{"):])["valid_accuracy"]))
    return values


def test_sweep_rows_follow_the_logs(tiny_env, tmp_path):
    out, summary = tmp_path / "sweep", tmp_path / "rows.json"
    args = ["scripts/teacher_sweep.py", "--task", "RTE", "--out", str(out), "--glue-dir",
            str(tiny_env["glue"]), "--base", str(tiny_env["hf"]), "--lrs", "1e-4",
            "--epochs", "1", "--optimizers", "adam,bert_adam", "--eval-every", "1",
            "--device", "cpu", "--summary", str(summary)]
    run_script(*args)
    rows = json.loads(summary.read_text())
    assert [(r["optimizer"], r["lr"], r["epochs"]) for r in rows] == [
        ("adam", 1e-4, 1), ("bert_adam", 1e-4, 1)]
    for row in rows:
        save = os.path.dirname(row["checkpoint"])
        accs = _valid_accuracies(os.path.join(save, "train.log"))
        assert accs and row["best"] == max(accs) and row["last"] == accs[-1]
        assert row["n_evals"] == len(accs) and row["metric"] == "accuracy"
        assert sorted(f for f in os.listdir(save) if f.endswith(".pt")) == ["checkpoint_best.pt"]
    with open(os.path.join(os.path.dirname(rows[1]["checkpoint"]), "train.log")) as f:
        assert "--optimizer bert_adam" in f.readline()
    again = run_script(*args)
    assert again.stdout.count("already done") == 2
