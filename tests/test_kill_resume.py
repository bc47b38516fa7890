"""SIGKILL a CR-ILD run mid-epoch, rerun the same command: it ends where an uninterrupted run
ends (issue 7). The run holds every piece of state resume must restore: the EMA student
(criterion state), the consistency ramp-up (epoch-based: the kill falls in epoch 2, whose
weight differs from epoch 1's), mixup draws (seeded by seed, update and batch position),
dropout (fairseq reseeds per update), the data order and position inside the epoch."""

import os
import re
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
