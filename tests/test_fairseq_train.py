"""fairseq-train end to end on a tiny BERT: fine-tune, resume, stage-1 ILD, stage-2 KD."""

import os

import pytest
import torch

from tests.conftest import run_script

COMMON = ["--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu", "--num-workers",
          "0", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed",
          "--batch-size", "8", "--max-positions", "64", "--log-format", "simple",
          "--log-interval", "1", "--no-epoch-checkpoints", "--seed", "3",
          "--dropout", "0.1", "--attention-dropout", "0.1"]


def train(data, save_dir, *extra, check=True):
    return run_script("-m", "fairseq_cli.train", str(data), *COMMON, "--save-dir", str(save_dir),
                      *extra, check=check)


def model_state(path):
    return torch.load(path, map_location="cpu")["model"]


@pytest.fixture(scope="module")
def teacher(tiny_env):
    """A tiny teacher fine-tuned for 12 updates (glue_ce, from the converted checkpoint)."""
    save = tiny_env["base"] / "teacher"
    train(tiny_env["data"], save, "--arch", "bert", "--encoder-layers", "4",
          "--encoder-embed-dim", "32", "--encoder-attention-heads", "4",
          "--encoder-ffn-embed-dim", "64", "--max-position-embeddings", "128",
          "--criterion", "glue_ce", "--finetune-from-model", str(tiny_env["ckpt"] / "model.pt"),
          "--max-update", "12", "--best-checkpoint-metric", "accuracy",
          "--maximize-best-checkpoint-metric")
    return save / "checkpoint_last.pt"


def test_resume_continues_the_interrupted_run(tiny_env, teacher):
    """6 updates + resume to 10 == 10 updates straight (same seed, dropout on)."""
    args = ["--arch", "bert_tiny", "--criterion", "glue_ce"]
    full, part = tiny_env["base"] / "full", tiny_env["base"] / "part"
    train(tiny_env["data"], full, *args, "--max-update", "10")
    train(tiny_env["data"], part, *args, "--max-update", "6")
    log = train(tiny_env["data"], part, *args, "--max-update", "10")
    assert "Loaded checkpoint" in log.stdout + log.stderr
    a, b = model_state(full / "checkpoint_last.pt"), model_state(part / "checkpoint_last.pt")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 1e-6


def test_teacher_has_task_state_and_head(teacher):
    state = torch.load(teacher, map_location="cpu")
    assert state["task_state"]["label_names"] == ["entailment", "not_entailment"]
    assert state["model"]["classification_heads.glue.out_proj.weight"].shape[0] == 2


def test_stage1_cr_ild_then_stage2_kd(tiny_env, teacher):
    s1 = tiny_env["base"] / "stage1"
    student = ["--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", "32",
               "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
               "--max-position-embeddings", "128"]
    out = train(tiny_env["data"], s1, *student, "--criterion", "cr_ild", "--teacher-path",
                str(teacher), "--init-student-from", str(tiny_env["ckpt"] / "model.pt"),
                "--ild-preset", "cr_ild", "--num-relation-heads", "4",
                "--consistency-on-relations", "--consistency-target", "ema",
                "--max-epoch", "3", "--disable-validation")
    logs = out.stdout + out.stderr
    assert "loss_qkv" in logs and "loss_cons" in logs and "froze" in logs
    state = torch.load(s1 / "checkpoint_last.pt", map_location="cpu")
    assert any(k.startswith("ema_model.") for k in state["criterion"])
    assert not any(k.startswith("teacher") for k in state["model"])
    t_before = model_state(teacher)
    s2 = tiny_env["base"] / "stage2"
    out = train(tiny_env["data"], s2, *student, "--criterion", "kd", "--teacher-path",
                str(teacher), "--finetune-from-model", str(s1 / "checkpoint_last.pt"),
                "--max-update", "6", "--validate-interval-updates", "3",
                "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric")
    logs = out.stdout + out.stderr
    assert "loss_kd" in logs and "accuracy" in logs
    assert os.path.isfile(s2 / "checkpoint_best.pt")
    t_after = model_state(teacher)
    assert all(torch.equal(t_before[k], t_after[k]) for k in t_before)


def test_teacher_vocabulary_mismatch_is_refused(tiny_env, tmp_path):
    """A teacher converted with another vocabulary fails at start-up with one clear line."""
    from tests.helpers_bert import make_tiny_hf_folder

    other = make_tiny_hf_folder(str(tmp_path / "hf"))
    run_script("scripts/convert_hf_bert.py", other, str(tmp_path / "other"))
    out = train(tiny_env["data"], tmp_path / "run", "--arch", "bert_tiny", "--criterion", "kd",
                "--teacher-path", str(tmp_path / "other" / "model.pt"), "--max-update", "1",
                check=False)
    assert out.returncode != 0
    assert "vocabulary differs" in out.stderr


def test_predict_writes_a_glue_server_file(tiny_env, teacher, tmp_path):
    run_script("scripts/predict_glue.py", str(teacher), "--data", str(tiny_env["data"]),
               "--out-dir", str(tmp_path))
    lines = (tmp_path / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + 8
    assert {ln.split("\t")[1] for ln in lines[1:]} <= {"entailment", "not_entailment"}
    assert [ln.split("\t")[0] for ln in lines[1:]] == [str(i) for i in range(8)]


def test_stage1_probes_log_ild_loss_on_dev_and_training_inputs_without_changing_training(
        tiny_env, teacher, tmp_path):
    """The overfitting curves' evaluations (``Budget.ild_probe_every``) log the ILD loss on
    dev and on a training sample, and leave the trained student bit-identical."""
    from fairseq_crild.pipeline.recipe import Budget, ild_probe_args
    from fairseq_crild.pipeline.runner import parse_lines

    student = ["--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", "32",
               "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
               "--max-position-embeddings", "128", "--criterion", "cr_ild", "--teacher-path",
               str(teacher), "--init-student-from", str(tiny_env["ckpt"] / "model.pt"),
               "--ild-preset", "cr_ild", "--num-relation-heads", "4", "--max-update", "6",
               "--train-probe-size", "16"]
    plain = train(tiny_env["data"], tmp_path / "plain", *student,
                  *ild_probe_args(Budget(1, 1, 1)))
    probed = train(tiny_env["data"], tmp_path / "probed", *student,
                   *ild_probe_args(Budget(1, 1, 1, ild_probe_every=2)))
    assert "| train_probe |" not in plain.stdout + plain.stderr
    lines = (probed.stdout + probed.stderr).splitlines()
    curves = {}
    for subset in ("valid", "train_probe"):
        records = parse_lines(lines, subset)
        curves[subset] = {int(r[f"{subset}_num_updates"]): r[f"{subset}_loss_ild"]
                          for r in records}
        assert {2, 4, 6} <= set(curves[subset]), subset
        assert all(0 < v < float("inf") for v in curves[subset].values())
    # the probe is the sample of the training inputs, not dev again (the tiny model's losses
    # are too close to tell the two apart at the log's 4 decimals)
    assert any("train_probe: 16 of the 48 training inputs" in line for line in lines)
    a = model_state(tmp_path / "plain" / "checkpoint_last.pt")
    b = model_state(tmp_path / "probed" / "checkpoint_last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
