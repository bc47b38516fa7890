"""SIGKILL a CR-ILD run mid-epoch, rerun the same command: it ends where an uninterrupted run
ends. The run holds every piece of state resume must restore: the EMA student
(criterion state), the consistency ramp-up (epoch-based: the kill falls in epoch 2, whose
weight differs from epoch 1's), mixup draws (seeded by seed, update and batch position),
dropout (fairseq reseeds per update), the data order and position inside the epoch."""

import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.conftest import ROOT
from tests.test_errors_distill import write_teacher
from tests.test_fairseq_train import COMMON, train

STUDENT = ["--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", "32",
           "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
           "--max-position-embeddings", "128"]
# 48 examples / batch 8 = 6 updates per epoch; 2 epochs; a checkpoint every 2 updates
KILL_AFTER = 9  # updates logged before the kill: checkpoint_2_8.pt is the last saved one


def cr_ild_args(tiny_env, teacher):
    return [*STUDENT, "--criterion", "cr_ild", "--teacher-path", str(teacher),
            "--init-student-from", str(tiny_env["ckpt"] / "model.pt"), "--ild-preset", "cr_ild",
            "--num-relation-heads", "4", "--consistency-on-relations",
            "--consistency-target", "ema", "--ema-decay", "0.9", "--mixup-partner", "random",
            "--max-epoch", "2", "--save-interval-updates", "2", "--disable-validation"]


def kill_after(data, save_dir, args, updates: int) -> str:
    """Starts the run and SIGKILLs it once it has logged ``updates`` updates."""
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), *COMMON, "--save-dir",
           str(save_dir), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            found = re.search(r"num_updates=(\d+)", line)
            if "| train_inner |" in line and found and int(found.group(1)) >= updates:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return "".join(seen)


def full_state(path):
    state = torch.load(path, map_location="cpu")
    return {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"criterion.{k}": v for k, v in state["criterion"].items()}}


def test_sigkill_mid_epoch_then_rerun_matches_uninterrupted(tiny_env, tmp_path):
    teacher = write_teacher(tiny_env, tmp_path / "teacher.pt")
    args = cr_ild_args(tiny_env, teacher)
    full, killed = tmp_path / "full", tmp_path / "killed"
    with ThreadPoolExecutor(max_workers=1) as pool:  # the uninterrupted run, side by side
        reference = pool.submit(train, tiny_env["data"], full, *args)
        kill_after(tiny_env["data"], killed, args, KILL_AFTER)
        reference.result()
    saved = torch.load(killed / "checkpoint_last.pt", map_location="cpu")
    resumed_at = saved["optimizer_history"][-1]["num_updates"]
    assert 8 <= resumed_at < 12 and resumed_at % 2 == 0
    # a kill while fairseq writes leaves only temporaries, which a rerun ignores
    (killed / "checkpoint_last.pt.tmp").write_bytes(b"PK\x03\x04 half a zip")

    out = train(tiny_env["data"], killed, *args)
    log = out.stdout + out.stderr
    assert re.search(rf"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 2 @ {resumed_at} "
                     r"updates\)", log), log[-3000:]
    assert "loss_cons" in log and "w_cons=0.05" in log  # epoch 2 of 2: ramp 0.1 * 1/2

    a, b = full_state(full / "checkpoint_last.pt"), full_state(killed / "checkpoint_last.pt")
    assert a.keys() == b.keys() and any(k.startswith("criterion.ema_model.") for k in a)
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    assert not torch.equal(a["criterion.ema_model.layers.0.fc1.weight"],
                           torch.load(tiny_env["ckpt"] / "model.pt")["model"]
                           ["layers.0.fc1.weight"])  # the EMA moved


def test_interrupted_checkpoint_copy_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    """fairseq copies checkpoint_E_U.pt to checkpoint_last.pt; a copy that dies half-way
    (here: an error after half the bytes) must leave the previous checkpoint_last.pt whole."""
    import shutil

    from fairseq.file_io import PathManager

    import fairseq_crild  # noqa: F401  (installs the atomic copy)

    good, new = tmp_path / "checkpoint_last.pt", tmp_path / "checkpoint_1_4.pt"
    good.write_bytes(b"old good checkpoint" * 100)
    new.write_bytes(b"new checkpoint" * 1000)

    def dies_half_way(src, dst, length=0):
        dst.write(src.read(len(b"new checkpoint" * 500)))
        raise KeyboardInterrupt  # stands for a kill between two writes

    monkeypatch.setattr(shutil, "copyfileobj", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        PathManager.copy(str(new), str(good), overwrite=True)
    assert good.read_bytes() == b"old good checkpoint" * 100
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_4.pt", "checkpoint_last.pt"]
    monkeypatch.undo()
    assert PathManager.copy(str(new), str(good), overwrite=True)
    assert good.read_bytes() == new.read_bytes()


# ------------------------------------------------------------------ kill during the first copy
KILL_HOOK = os.path.join(ROOT, "tests", "kill_copy_hook")  # its sitecustomize SIGKILLs a copy
FINETUNE = ["--arch", "bert", "--encoder-layers", "4", "--encoder-embed-dim", "32",
            "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
            "--max-position-embeddings", "128", "--criterion", "glue_ce",
            "--max-update", "10", "--save-interval-updates", "5", "--disable-validation"]


def test_kill_during_first_copy_to_last_resumes_from_the_numbered_checkpoint(tiny_env,
                                                                             tmp_path):
    """fairseq saves update 5 as checkpoint_1_5.pt, then copies it to checkpoint_last.pt; a
    SIGKILL inside that first copy leaves no checkpoint_last.pt. The rerun resumes from
    checkpoint_1_5.pt (not from --finetune-from-model again) and ends with the uninterrupted
    run's parameters; --resume-from last keeps fairseq's choice (start over)."""
    args = [*FINETUNE, "--finetune-from-model", str(tiny_env["ckpt"] / "model.pt")]
    full, killed = tmp_path / "full", tmp_path / "killed"
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(tiny_env["data"]), *COMMON,
           "--save-dir", str(killed), *args]
    env = {**os.environ, "CRILD_KILL_DURING_COPY_TO": "checkpoint_last.pt",
           "PYTHONPATH": os.pathsep.join([KILL_HOOK, os.environ.get("PYTHONPATH", "")])}
    with ThreadPoolExecutor(max_workers=1) as pool:
        reference = pool.submit(train, tiny_env["data"], full, *args)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        reference.result()
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert sorted(os.listdir(killed)) == ["checkpoint_1_5.pt", "checkpoint_last.pt.copying"]

    fairseq_way = tmp_path / "fairseq_way"
    shutil.copytree(killed, fairseq_way)
    out = train(tiny_env["data"], fairseq_way, *args, "--max-update", "5",
                "--resume-from", "last")
    log = out.stdout + out.stderr
    assert "loading pretrained model from" in log and "newest intact" not in log  # from zero

    out = train(tiny_env["data"], killed, *args)
    log = out.stdout + out.stderr
    assert "resuming from the newest intact checkpoint" in log and "checkpoint_1_5.pt" in log
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 1 @ 5 updates\)", log)
    assert "loading pretrained model from" not in log, log[-3000:]
    assert not (killed / "checkpoint_last.pt.copying").exists()
    a = torch.load(full / "checkpoint_last.pt", map_location="cpu")
    b = torch.load(killed / "checkpoint_last.pt", map_location="cpu")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1][
        "num_updates"] == 10
    worst = max((a["model"][k].double() - b["model"][k].double()).abs().max().item()
                for k in a["model"])
    assert worst <= 1e-6, worst


def _fake_checkpoint(path, updates, tail=""):
    """A training checkpoint as fairseq lays it out (what resume reads), ``updates`` deep."""
    torch.save({"model": {"w": torch.full((4,), float(updates))}, "cfg": None,
                "optimizer_history": [{"num_updates": updates}],
                "extra_state": {"train_iterator": {"epoch": 1}}}, path)
    if tail == "cut":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def _updates(path):
    return int(torch.load(path, map_location="cpu")["model"]["w"][0])


@pytest.mark.parametrize("files, copied, last_after", [
    # {name: updates, or (updates, "cut") for a truncated file}; the copy source; last's updates
    ({"checkpoint_1_3.pt": 3, "checkpoint_1_5.pt": 5, "checkpoint_best.pt": 3}, "checkpoint_1_5.pt",
     5),
    ({"checkpoint_last.pt": 5, "checkpoint_1_5.pt": 5, "checkpoint_1_3.pt": 3}, None, 5),
    ({"checkpoint_last.pt": 3, "checkpoint_1_5.pt": 5}, "checkpoint_1_5.pt", 5),  # copy died
    ({"checkpoint_last.pt": (7, "cut"), "checkpoint_1_5.pt": 5}, "checkpoint_1_5.pt", 5),
    ({"checkpoint_1_6.pt": (6, "cut"), "checkpoint_1_5.pt": 5}, "checkpoint_1_5.pt", 5),
    ({"checkpoint_last.pt": 9, "checkpoint_best.pt": 4, "checkpoint2.pt": 8}, None, 9),
    ({"checkpoint_best.pt": 4, "checkpoint.best_accuracy_0.5.pt": 4}, "checkpoint_best.pt", 4),
    ({"checkpoint2.pt": 12, "checkpoint_2_10.pt": 10}, "checkpoint2.pt", 12),
    ({}, None, None),
    ({"checkpoint_last.pt": (5, "cut")}, None, None),  # nothing to resume from: left alone
])
def test_repair_last_checkpoint_picks_the_newest_intact(tmp_path, files, copied, last_after):
    from fairseq_crild.patches.atomic_checkpoints import repair_last_checkpoint

    for name, spec in files.items():
        updates, tail = spec if isinstance(spec, tuple) else (spec, "")
        _fake_checkpoint(tmp_path / name, updates, tail)
    (tmp_path / "checkpoint_last.pt.copying").write_bytes(b"half")  # a stale temporary
    before = {n: (tmp_path / n).read_bytes() for n in files}
    source = repair_last_checkpoint(str(tmp_path))
    assert (source and os.path.basename(source)) == copied
    last = tmp_path / "checkpoint_last.pt"
    if last_after is None:
        assert not last.exists() or last.read_bytes() == before["checkpoint_last.pt"]
    else:
        assert _updates(last) == last_after
    if copied:
        assert last.read_bytes() == before[copied]
    if isinstance(files.get("checkpoint_last.pt"), tuple) and copied:  # kept, not deleted
        kept = tmp_path / "checkpoint_last.pt.unreadable"
        assert kept.read_bytes() == before["checkpoint_last.pt"]
    for name in files:  # every other file untouched
        if name != "checkpoint_last.pt":
            assert (tmp_path / name).read_bytes() == before[name]
    assert not (tmp_path / "checkpoint_last.pt.copying").exists()


def test_the_hook_leaves_explicit_restore_files_and_resume_from_last_alone(tmp_path):
    import types

    from fairseq_crild.patches.atomic_checkpoints import _load_checkpoint

    _fake_checkpoint(tmp_path / "checkpoint_1_5.pt", 5)
    calls = []

    def original(cfg, trainer, **kw):
        calls.append(os.path.exists(tmp_path / "checkpoint_last.pt"))
        return "loaded"

    def cfg(**kw):
        base = dict(save_dir=str(tmp_path), restore_file="checkpoint_last.pt",
                    no_last_checkpoints=False)
        return types.SimpleNamespace(**{**base, **kw})

    def trainer(mode):
        return types.SimpleNamespace(data_parallel_rank=0, checkpoint_suffix="",
                                     task=types.SimpleNamespace(
                                         cfg=types.SimpleNamespace(resume_from=mode)))

    assert _load_checkpoint(original, cfg(restore_file="x.pt"), trainer("newest-intact"))
    assert _load_checkpoint(original, cfg(no_last_checkpoints=True), trainer("newest-intact"))
    assert _load_checkpoint(original, cfg(), trainer("last"))
    assert calls == [False, False, False]
    assert _load_checkpoint(original, cfg(), trainer("newest-intact")) == "loaded"
    assert calls[-1] is True and _updates(tmp_path / "checkpoint_last.pt") == 5
