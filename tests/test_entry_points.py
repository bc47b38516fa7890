"""fairseq's other entry points on the plugin: fairseq-validate on a student whose teacher is
gone, fairseq-interactive refused in one sentence, --fp16 without CUDA refused in one."""

import re
import shutil
import types

import pytest
import torch

from fairseq_crild.patches.device import PrecisionConfigError, check_precision
from tests.conftest import run_script
from tests.test_fairseq_train import train

TEACHER_ARCH = ["--arch", "bert", "--encoder-layers", "4", "--encoder-embed-dim", "32",
                "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
                "--max-position-embeddings", "128"]
STUDENT_ARCH = TEACHER_ARCH[:2] + ["--encoder-layers", "2"] + TEACHER_ARCH[4:]


@pytest.fixture(scope="module")
def students(tiny_env, tmp_path_factory):
    """A kd student and a cr_ild stage-1 student whose teacher was deleted after training."""
    base = tmp_path_factory.mktemp("entry")
    data, init = tiny_env["data"], str(tiny_env["ckpt"] / "model.pt")
    train(data, base / "teacher", *TEACHER_ARCH, "--criterion", "glue_ce",
          "--finetune-from-model", init, "--max-update", "3")
    teacher = base / "teacher" / "checkpoint_last.pt"
    train(data, base / "kd", *STUDENT_ARCH, "--criterion", "kd", "--teacher-path", str(teacher),
          "--init-student-from", init, "--max-update", "3")
    train(data, base / "s1", *STUDENT_ARCH, "--criterion", "cr_ild", "--ild-preset", "cr_ild",
          "--num-relation-heads", "4", "--teacher-path", str(teacher), "--init-student-from",
          init, "--max-update", "2", "--disable-validation")
    shutil.rmtree(base / "teacher")  # a moved / deleted teacher
    (base / "init").mkdir()  # the initialisation source is not needed either
    return {"kd": base / "kd" / "checkpoint_last.pt", "s1": base / "s1" / "checkpoint_last.pt",
            "teacher": teacher, "base": base}


def dev_accuracy(checkpoint, data) -> float:
    """Accuracy (%) of the checkpoint's argmax on every dev pair, in plain Python."""
    from fairseq_crild.models.loading import load_bert
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    cfg = DistillGlueConfig(data=str(data), max_positions=64)
    cfg.seed = 1
    task = DistillGlueTask.setup_task(cfg)
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    model, _ = load_bert(str(checkpoint), task.dictionary)
    model.eval()
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits, _ = model(**sample["net_input"], classification_head_name="glue")
    rows, targets = logits.tolist(), sample["target"].tolist()
    hits = sum(int(max(range(len(r)), key=r.__getitem__) == t) for r, t in zip(rows, targets))
    return 100.0 * hits / len(targets)


def validate(checkpoint, data, *extra, check=True):
    return run_script("-m", "fairseq_cli.validate", str(data), "--user-dir", "fairseq_crild",
                      "--task", "distill_glue", "--path", str(checkpoint), "--batch-size", "8",
                      "--cpu", "--num-workers", "0", *extra, check=check)


@pytest.mark.parametrize("which", ["kd", "s1"])
def test_validate_a_student_without_its_teacher(tiny_env, students, which):
    assert not students["teacher"].exists()
    out = validate(students[which], tiny_env["data"])
    logs = out.stdout + out.stderr
    assert "its teacher is not loaded" in logs
    line = next(ln for ln in logs.splitlines() if "| valid on 'valid' subset |" in ln)
    accuracy = float(re.search(r"\| accuracy ([\d.]+)", line).group(1))
    assert accuracy == pytest.approx(dev_accuracy(students[which], tiny_env["data"]), abs=0.006)


def test_training_with_a_wrong_teacher_path_fails_before_any_update(tiny_env, students):
    out = train(tiny_env["data"], students["base"] / "wrong", *STUDENT_ARCH, "--criterion",
                "kd", "--teacher-path", str(students["teacher"]), "--max-update", "2",
                check=False)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"FileNotFoundError: checkpoint not found: {students['teacher']}"
    assert "num_updates" not in out.stdout + out.stderr


def test_interactive_is_refused_in_one_sentence(tiny_env, students):
    out = run_script("-m", "fairseq_cli.interactive", str(tiny_env["data"]), "--user-dir",
                     "fairseq_crild", "--task", "distill_glue", "--path", str(students["kd"]),
                     "--cpu", input="a b\n", check=False)
    assert out.returncode != 0
    assert "NotImplementedError" not in out.stderr
    assert "distill_glue classifies sentence pairs and generates no text" in out.stderr
    assert "scripts/classify.py" in out.stderr


def test_fp16_on_the_cpu_says_use_bf16(tiny_env, tmp_path):
    out = train(tiny_env["data"], tmp_path / "fp16", "--arch", "bert_tiny", "--criterion",
                "glue_ce", "--max-update", "1", "--fp16", check=False)
    assert out.returncode != 0
    assert "Torch not compiled with CUDA" not in out.stderr  # fairseq's AssertionError
    last = out.stderr.strip().splitlines()[-1]
    assert "--fp16 needs a GPU" in last and "use --bf16 on the CPU" in last


def _cfg(**common):
    base = {"fp16": False, "memory_efficient_fp16": False, "cpu": False, "bf16": False}
    return types.SimpleNamespace(common=types.SimpleNamespace(**{**base, **common}))


def test_check_precision_cases(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_precision(_cfg(fp16=True))  # fp16 on a CUDA machine: fairseq's business
    check_precision(_cfg(bf16=True, cpu=True))  # the plugin's CPU bf16 path
    for cfg in (_cfg(fp16=True, cpu=True), _cfg(memory_efficient_fp16=True, cpu=True)):
        with pytest.raises(PrecisionConfigError, match="use --bf16 on the CPU"):
            check_precision(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PrecisionConfigError, match="--fp16 needs a GPU"):
        check_precision(_cfg(fp16=True))  # no --cpu, but no CUDA device either
