"""crild-compare's plan: seed-major order, finished runs skipped, pruning keeps the student."""

import argparse
import os

import pytest

from fairseq_crild.cli import compare
from fairseq_crild.pipeline import comparison


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def test_seed_major_and_finished_runs_skipped(tmp_path):
    out = str(tmp_path)
    _touch(os.path.join(out, "runs", "RTE", "kd", "seed1", "report.json"))
    _touch(os.path.join(out, "runs", "RTE", "cr_ild", "seed2", "stage1", "done.json"))
    todo = comparison.plan("RTE", ["kd", "cr_ild"], [1, 2], out)
    assert [(r.method, r.seed) for r in todo] == [("cr_ild", 1), ("kd", 2), ("cr_ild", 2)]


def test_pruning_keeps_stage2_best_and_unfinished_stages(tmp_path):
    run = tmp_path / "run"
    for name in ("stage1/checkpoint_last.pt", "stage1/done.json", "stage2/checkpoint_best.pt",
                 "stage2/checkpoint_last.pt", "stage2/checkpoint_1_50.pt", "stage2/done.json"):
        _touch(str(run / name))
    doomed = comparison.prunable_checkpoints(str(run))
    assert sorted(os.path.relpath(p, run) for p in doomed) == [
        "stage1/checkpoint_last.pt", "stage2/checkpoint_1_50.pt", "stage2/checkpoint_last.pt"]
    os.remove(str(run / "stage2/done.json"))  # stage 2 unfinished: it resumes from them
    assert [os.path.relpath(p, run) for p in comparison.prunable_checkpoints(str(run))] == [
        "stage1/checkpoint_last.pt"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "kd,nope"], "unknown ['nope']"),
    (["--seeds", "1,x"], "comma-separated integers"),
    (["--seeds", "1,1"], "distinct"),
    (["--budget", "huge"], "--budget 'huge'"),
    (["--jobs", "0"], "at least 1"),
    (["--stage1-updates", "-1"], "--stage1-updates"),
])
def test_bad_options_fail_before_any_run(tmp_path, capsys, argv, message):
    rc = compare.main(["--task", "RTE", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and message in err[-1] and err[-1].startswith("crild-compare: error:")
    assert not (tmp_path / "o").exists()


def test_runs_with_supplementary_data_are_named_apart(tmp_path):
    assert comparison.run_name("kd") == "kd"
    assert comparison.run_name("kd", kd_data="/x/QNLI-pairs/") == "kd+kd-data=QNLI-pairs"
    assert comparison.run_name("kd", kd_data="/x/QNLI-pairs", stage2_epochs=1) == (
        "kd+kd-data=QNLI-pairs+stage2-epochs=1")
    assert comparison.run_name("cr_ild", "/x/QNLI-pairs", "concat") == (
        "cr_ild+ild-data=QNLI-pairs+task")
    assert comparison.run_name("l_ild", "/x/QNLI-pairs", stage1_updates=310) == (
        "l_ild+ild-data=QNLI-pairs+stage1-updates=310")
    todo = comparison.plan("RTE", ["kd"], [1], str(tmp_path),
                           lambda m: comparison.run_name(m, kd_data="/x/P"))
    assert todo[0].run_dir(str(tmp_path)).endswith(os.path.join("RTE", "kd+kd-data=P", "seed1"))


def test_harder_settings_have_their_own_folders_and_a_teacher_per_seed(tmp_path):
    out = str(tmp_path)
    _touch(os.path.join(out, "runs", "RTE", "kd", "seed1", "report.json"))  # a full-GLUE run
    todo = comparison.plan("RTE", ["kd", "l_ild"], [1, 2], out, setting="few_sample")
    assert len(todo) == 4  # the full-GLUE report does not count for few_sample
    assert todo[0].run_dir(out) == os.path.join(out, "runs", "RTE-few_sample", "kd", "seed1")
    groups = comparison.teacher_groups(todo)
    assert [[(r.method, r.seed) for r in g] for g in groups] == [
        [("kd", 1), ("l_ild", 1)], [("kd", 2), ("l_ild", 2)]]
    full = comparison.plan("RTE", ["kd", "l_ild"], [1, 2], out)
    assert [len(g) for g in comparison.teacher_groups(full)] == [3]  # one shared teacher
    assert comparison.teacher_dir(out, "RTE", "table") == os.path.join(out, "teachers",
                                                                       "RTE-table")
    assert comparison.teacher_dir(out, "RTE", "table", "label_noise", 3) == os.path.join(
        out, "teachers", "RTE-table-label_noise-seed3")


def test_pipeline_command_carries_the_setting_and_probes(tmp_path):
    args = argparse.Namespace(
        budget="table", glue_dir="g", out=str(tmp_path), base="minilm", student_layers=3,
        device="cpu", bf16=False, ild_data=None, ild_data_mode="replace", kd_data=None,
        setting="label_noise", ild_probe_every=30, stage1_updates=310, stage2_epochs=4)
    ild = compare._pipeline_cmd(args, comparison.PlannedRun("RTE", "l_ild", 2, "l_ild",
                                                            "label_noise"), "T")
    kd = compare._pipeline_cmd(args, comparison.PlannedRun("RTE", "kd", 2, "kd",
                                                           "label_noise"), "T")
    assert ild[ild.index("--setting") + 1] == "label_noise"
    assert ild[ild.index("--ild-probe-every") + 1] == "30"
    assert "--ild-probe-every" not in kd  # no stage 1 to probe
    assert ild[ild.index("--stage1-updates") + 1] == "310" and "--stage1-updates" not in kd
    assert ild[ild.index("--stage2-epochs") + 1] == kd[kd.index("--stage2-epochs") + 1] == "4"
    assert compare._run_name(args, "kd") == "kd+stage2-epochs=4"
    assert compare._run_name(args, "l_ild") == "l_ild+stage1-updates=310+stage2-epochs=4"
    assert kd[kd.index("--teacher") + 1] == "T"


def test_a_shared_teacher_is_refused_in_a_harder_setting(tmp_path, capsys):
    rc = compare.main(["--task", "RTE", "--out", str(tmp_path / "o"), "--setting",
                       "few_sample", "--teacher", "t.pt"])
    assert rc == 1 and "each seed trains its own teacher" in capsys.readouterr().err
