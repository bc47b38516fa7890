"""The pipeline on any device: --device / --bf16 / --fp16 in every stage's command, built
without a GPU; progress lines (updates done / total, ETA) from fairseq's log records."""

import json
import os
import sys

import pytest
import torch

from fairseq_crild.pipeline import recipe, runner
from fairseq_crild.pipeline.runner import Progress, num_updates_of, total_updates

DEVICE_FLAGS = {"--cpu", "--bf16", "--fp16", "--distributed-world-size", "1"}


def test_resolve_device():
    assert recipe.resolve_device("auto", cuda_available=True) == "cuda"
    assert recipe.resolve_device("auto", cuda_available=False) == "cpu"
    assert recipe.resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(ValueError, match="--device cuda: this machine has no CUDA device"):
        recipe.resolve_device("cuda", cuda_available=False)
    with pytest.raises(ValueError, match="--device 'tpu'"):
        recipe.resolve_device("tpu", cuda_available=False)


def test_device_args():
    assert recipe.device_args("cpu") == ["--cpu"]
    assert recipe.device_args("cpu", "bf16") == ["--cpu", "--bf16"]
    assert recipe.device_args("cuda", "fp16") == ["--distributed-world-size", "1", "--fp16"]
    assert recipe.device_args("cuda", "bf16") == ["--distributed-world-size", "1", "--bf16"]
    with pytest.raises(ValueError, match="--fp16 needs a GPU; use --bf16 on the CPU"):
        recipe.device_args("cpu", "fp16")
    assert recipe.device_args("cpu", "bf16", "hash") == ["--cpu", "--bf16", "--dropout-impl",
                                                         "hash"]
    assert recipe.device_args("cpu", "fp32", "torch") == ["--cpu"]
    with pytest.raises(ValueError, match="--dropout-impl 'fast': choose torch, hash"):
        recipe.device_args("cpu", "fp32", "fast")


def test_stage_builders_are_device_neutral():
    budget = recipe.budget_for("cpu", "RTE")
    stages = [recipe.teacher_args("D", "S", "B", [], 100, "accuracy", budget, 1),
              recipe.stage1_args("D", "S", "cr_ild", "T", "B", [], 100, budget, 1),
              recipe.stage2_args("D", "S", "kd", "T", "I", "B", [], 100, "accuracy", budget, 1)]
    for args in stages:
        assert "--cpu" not in args and "--fp16" not in args and "--bf16" not in args


def _dry_run(tiny_env, out, monkeypatch, capsys, cuda: bool, *flags):
    sys.path.insert(0, runner.ROOT)
    from scripts import run_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    rc = run_pipeline.main(["--task", "RTE", "--method", "cr_ild", "--glue-dir",
                            str(tiny_env["glue"]), "--base", str(tiny_env["hf"]), "--out",
                            str(out), "--budget", "smoke", "--dry-run", *flags])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out[captured.out.index("{"):])


def test_commands_built_for_cuda_carry_no_cpu(tiny_env, tmp_path, monkeypatch, capsys):
    """On a "CUDA" machine (torch.cuda.is_available patched), --device auto --fp16 gives
    every stage --fp16 and no --cpu; the rest of each command is the CPU run's."""
    gpu = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, True, "--fp16")
    cpu = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, False, "--bf16")
    assert set(gpu) == set(cpu) == {"teacher", "stage1", "stage2"}
    for name in gpu:
        assert "--cpu" not in gpu[name] and "--fp16" in gpu[name]
        assert gpu[name][-3:] == ["--distributed-world-size", "1", "--fp16"]
        assert cpu[name][-2:] == ["--cpu", "--bf16"] and cpu[name].count("--cpu") == 1
        assert gpu[name][:-3] == cpu[name][:-2]
    explicit = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, True, "--device", "cpu")
    assert all(args[-1] == "--cpu" for args in explicit.values())
    hashed = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, False, "--dropout-impl", "hash")
    for name, args in hashed.items():  # every stage, the rest of its command unchanged
        assert args == explicit[name] + ["--dropout-impl", "hash"]


def test_conversion_and_preparation_run_in_process(tiny_env, tmp_path, monkeypatch, capsys):
    """The pipeline converts the base and prepares the data by calling the package's
    functions: a dry run starts no child process at all."""
    import subprocess

    def no_child(*args, **kwargs):
        raise AssertionError(f"a child process was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_child)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    commands = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, False)
    assert set(commands) == {"teacher", "stage1", "stage2"}
    assert (tmp_path / "base" / "model.pt").is_file()
    assert (tmp_path / "data" / "RTE" / "meta.json").is_file()


def test_impossible_device_fails_before_any_work(tiny_env, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, runner.ROOT)
    from scripts import run_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags in (["--device", "cuda"], ["--device", "cpu", "--fp16"]):
        rc = run_pipeline.main(["--task", "RTE", "--method", "kd", "--glue-dir",
                                str(tiny_env["glue"]), "--out", str(tmp_path / "x"), *flags])
        assert rc == 1
        assert "run_pipeline: error:" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_total_updates_is_the_scheduled_count():
    budget = recipe.budget_for("cpu", "RTE")  # stage 2: batch 32, 3 epochs
    args = recipe.stage2_args("D", "S", "kd", "T", "I", "B", [], 100, "accuracy", budget, 1)
    assert total_updates(args) == 12  # ceil(100 / 32) * 3
    smoke = recipe.budget_for("smoke", "RTE")  # capped by --max-update 4
    assert total_updates(recipe.stage1_args("D", "S", "cr_ild", "T", "B", [], 100, smoke,
                                            1)) == 4
    assert total_updates(["--lr", "1"]) is None


JSON_INNER = ('2026-12-01 10:11:54 | INFO | train_inner | {"epoch": 1, "update": 0.064, '
              '"loss": "0.6957", "num_updates": "10", "lr": "4.3e-06", "wall": "8"}')
SIMPLE_INNER = ("2026-12-01 10:11:54 | INFO | train_inner | epoch 001:     10 / 156 "
                "loss=0.696, num_updates=10, lr=4.3e-06")
JSON_TRAIN = ('2026-12-01 10:14:03 | INFO | train | {"epoch": 1, "train_loss": "0.6927", '
              '"train_num_updates": "156"}')
SIMPLE_TRAIN = ("2026-12-01 10:14:03 | INFO | train | epoch 001 | loss 0.693 | "
                "num_updates 156 | lr 1.4e-05")
VALID = ('2026-12-01 10:14:03 | INFO | valid | {"epoch": 1, "valid_loss": "0.69", '
         '"valid_num_updates": "156"}')


def test_num_updates_of_fairseq_records():
    assert num_updates_of(JSON_INNER) == 10
    assert num_updates_of(SIMPLE_INNER) == 10
    assert num_updates_of(JSON_TRAIN) == 156
    assert num_updates_of(SIMPLE_TRAIN) == 156
    assert num_updates_of(VALID) is None
    assert num_updates_of("| INFO | fairseq_cli.train | num_updates 3") is None


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_and_eta_by_hand():
    clock = Clock()
    p = Progress(40, clock=clock)  # fresh stage: rate measured from the start (t = 0)
    clock.t = 30.0
    assert p.update(10) == "update 10/40 (25%), 3.00 s/update, ETA 1m30s"  # 30 x 3 s
    clock.t = 90.0
    assert p.update(30) == "update 30/40 (75%), 3.00 s/update, ETA 30s"
    clock.t = 4000.0
    assert p.update(40).endswith("ETA 0s")


def test_progress_after_resume_measures_this_process_only():
    clock = Clock()
    p = Progress(400, resuming=True, clock=clock)
    clock.t = 5.0
    assert p.update(200) == "update 200/400 (50%)"  # updates 1..200 ran in an earlier process
    clock.t = 25.0
    assert p.update(210) == "update 210/400 (52%), 2.00 s/update, ETA 6m20s"  # 190 x 2 s
    unknown_total = Progress(None, clock=clock)  # started at t = 25
    clock.t = 50.0
    assert unknown_total.update(5) == "update 5, 5.00 s/update"


def test_run_stage_prints_progress(tmp_path, monkeypatch, capsys):
    """run_stage turns fairseq's records into progress lines (fake process, no training)."""
    lines = [JSON_INNER + "\n", VALID + "\n", JSON_TRAIN + "\n"]

    class FakeProc:
        def __init__(self, cmd, **kwargs):
            self.cmd, self.stdout = cmd, iter(lines)

        def wait(self):
            return 0

    monkeypatch.setattr(runner.subprocess, "Popen", FakeProc)
    runner.run_stage("teacher", str(tmp_path / "t"), ["D", "--total-num-update", "156"])
    out = capsys.readouterr().out
    assert "[teacher] update 10/156 (6%)" in out and "ETA" in out
    assert "[teacher] update 156/156 (100%)" in out
    assert "valid_loss=0.69" in out
    assert (tmp_path / "t" / "train.log").read_text().count("train_inner") == 1


def test_supplementary_pairs_reach_their_stage(tiny_env, tmp_path, monkeypatch, capsys):
    """--ild-data feeds stage 1 (replacing the task's set: the schedule counts its pairs),
    --kd-data is added to stage 2's set; both binarised once with the base's dictionary."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    task_rows = (tiny_env["glue"] / "RTE" / "train.tsv").read_text().splitlines()[1:]
    rows = ["sentence1\tsentence2"] + ["\t".join(r.split("\t")[1:3]) for r in task_rows]
    rows = (rows * 40)[:41]  # the task's own words: 40 pairs the dictionary covers
    rows[0] = "sentence1\tsentence2"
    (pairs / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    cmds = _dry_run(tiny_env, out, monkeypatch, capsys, False, "--ild-data", str(pairs),
                    "--kd-data", str(pairs))
    folder = str(out / "data" / "pairs" / "pairs")
    assert json.load(open(os.path.join(folder, "meta.json")))["splits"]["train"] == 40
    s1, s2 = cmds["stage1"], cmds["stage2"]
    assert s1[s1.index("--ild-data") + 1] == folder and "replace" in s1
    assert s2[s2.index("--ild-data") + 1] == folder and "concat" in s2
    assert "--ild-data" not in cmds["teacher"]
    smoke = recipe.budget_for("smoke", "RTE")
    assert total_updates(s1) == -(-40 // smoke.stage1_batch) * smoke.stage1_epochs  # 40 pairs
    n_task = json.load(open(out / "data" / "RTE" / "meta.json"))["splits"]["train"]
    assert total_updates(s2) == min(smoke.max_update, -(-(n_task + 40) // smoke.stage2_batch))


def test_supplementary_pairs_need_the_stage_that_reads_them(tiny_env, tmp_path, monkeypatch,
                                                           capsys):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "train.tsv").write_text("sentence1\tsentence2\na b\tc d\n", encoding="utf-8")
    sys.path.insert(0, runner.ROOT)
    from scripts import run_pipeline

    rc = run_pipeline.main(["--task", "RTE", "--method", "finetune", "--glue-dir",
                            str(tiny_env["glue"]), "--base", str(tiny_env["hf"]), "--out",
                            str(tmp_path / "o"), "--budget", "smoke", "--dry-run",
                            "--kd-data", str(pairs)])
    assert rc == 1 and "--kd-data: method finetune has no KD stage 2" in capsys.readouterr().err


def test_stage1_updates_replace_stage1_epochs_only(tiny_env, tmp_path, monkeypatch, capsys):
    """--stage1-updates N: stage 1 runs N updates (warm-up, decay and, with no --max-epoch,
    the consistency ramp spread over them) in its own run folder; the rest is unchanged."""
    plain = _dry_run(tiny_env, tmp_path / "a", monkeypatch, capsys, False)
    short = _dry_run(tiny_env, tmp_path / "b", monkeypatch, capsys, False,
                     "--stage1-updates", "3")  # the smoke budget caps every stage at 4
    s1 = short["stage1"]
    assert "--max-epoch" in plain["stage1"] and "--max-epoch" not in s1
    assert [s1[s1.index(flag) + 1] for flag in ("--max-update", "--total-num-update",
                                               "--warmup-updates")] == ["3", "3", "1"]
    save_dir = s1[s1.index("--save-dir") + 1]
    assert os.path.basename(os.path.dirname(os.path.dirname(save_dir))) == (
        "cr_ild+stage1-updates=3")
    for stage in ("teacher", "stage2"):
        assert [a.replace(str(tmp_path / "b"), str(tmp_path / "a")).replace(
            "cr_ild+stage1-updates=3", "cr_ild") for a in short[stage][1:]] == plain[stage][1:]


def test_stage1_updates_need_a_stage1(tiny_env, tmp_path, capsys):
    sys.path.insert(0, runner.ROOT)
    from scripts import run_pipeline

    rc = run_pipeline.main(["--task", "RTE", "--method", "kd", "--glue-dir",
                            str(tiny_env["glue"]), "--base", str(tiny_env["hf"]), "--out",
                            str(tmp_path / "o"), "--budget", "smoke", "--dry-run",
                            "--stage1-updates", "5"])
    assert rc == 1 and "--stage1-updates: method kd has no ILD stage 1" in (
        capsys.readouterr().err)


def test_ild_probes_reach_stage1_only(tiny_env, tmp_path, monkeypatch, capsys):
    plain = _dry_run(tiny_env, tmp_path / "a", monkeypatch, capsys, False)
    probed = _dry_run(tiny_env, tmp_path / "b", monkeypatch, capsys, False,
                      "--ild-probe-every", "30")
    assert "--disable-validation" in plain["stage1"]
    s1 = probed["stage1"]
    assert "--disable-validation" not in s1
    assert s1[s1.index("--valid-subset") + 1] == "valid,train_probe"
    assert s1[s1.index("--validate-interval-updates") + 1] == "30"
    assert [a.replace(str(tmp_path / "b"), str(tmp_path / "a"))
            for a in probed["stage2"][1:]] == plain["stage2"][1:]  # stage 2 unchanged


def test_stage2_epochs_overrides_the_budget_in_stage2_only(tiny_env, tmp_path, monkeypatch,
                                                           capsys):
    plain = _dry_run(tiny_env, tmp_path / "a", monkeypatch, capsys, False)
    longer = _dry_run(tiny_env, tmp_path / "b", monkeypatch, capsys, False,
                      "--stage2-epochs", "3")
    s2 = longer["stage2"]
    assert plain["stage2"][plain["stage2"].index("--max-epoch") + 1] == str(
        recipe.budget_for("smoke", "RTE").stage2_epochs)
    assert s2[s2.index("--max-epoch") + 1] == "3"
    save_dir = s2[s2.index("--save-dir") + 1]
    assert os.path.basename(os.path.dirname(os.path.dirname(save_dir))) == (
        "cr_ild+stage2-epochs=3")  # its own run folder: never reuses the budget's stage 2
    for stage in ("teacher", "stage1"):  # the same but for the run folder's name
        assert [a.replace(str(tmp_path / "b"), str(tmp_path / "a")).replace(
            "cr_ild+stage2-epochs=3", "cr_ild") for a in longer[stage][1:]] == plain[stage][1:]


def test_relation_kl_impl_reaches_stage1_only(tiny_env, tmp_path, monkeypatch, capsys):
    """--relation-kl-impl cpp is a cr_ild option: stage 1 carries it, the other stages'
    commands are unchanged; an unknown choice names the option."""
    plain = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, False)
    fused = _dry_run(tiny_env, tmp_path, monkeypatch, capsys, False, "--relation-kl-impl", "cpp")
    assert fused["teacher"] == plain["teacher"] and fused["stage2"] == plain["stage2"]
    i = fused["stage1"].index("--relation-kl-impl")
    assert fused["stage1"][i + 1] == "cpp"
    assert fused["stage1"][:i] + fused["stage1"][i + 2:] == plain["stage1"]
    assert recipe.relation_kl_args("torch") == []
    with pytest.raises(ValueError, match="--relation-kl-impl 'fused': choose torch, cpp"):
        recipe.relation_kl_args("fused")
