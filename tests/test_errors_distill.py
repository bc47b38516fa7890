"""Bad set-ups stop fairseq-train with one clear last line: the error type and a message
naming the option or file (issue 7). fairseq prints the traceback above it; the last line
is what a user reads."""

import os
import shutil

import pytest
import torch

from fairseq_crild.dictionary import load_bert_dictionary, vocab_fingerprint
from fairseq_crild.models.loading import load_bert
from tests.test_fairseq_train import train

STUDENT = ["--arch", "bert_tiny", "--max-update", "1"]


def last_line(proc) -> str:
    """The last non-blank stderr line of a failed run (the exception fairseq-train died of)."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1]


def write_teacher(tiny_env, path, num_classes=2, label_names=("entailment", "not_entailment"),
                  vocab_sha256=None) -> str:
    """A teacher checkpoint built in-process from the converted tiny BERT plus a head."""
    dictionary = load_bert_dictionary(str(tiny_env["ckpt"] / "dict.txt"))
    model, state = load_bert(str(tiny_env["ckpt"] / "model.pt"), dictionary)
    model.register_classification_head("glue", num_classes=num_classes)
    state["model"] = model.state_dict()
    state["task_state"] = {"vocab_sha256": vocab_sha256 or vocab_fingerprint(dictionary),
                           "label_names": list(label_names)}
    torch.save(state, path)
    return str(path)


def distil(tiny_env, tmp_path, teacher, *extra):
    return train(tiny_env["data"], tmp_path / "run", *STUDENT, "--criterion", "kd",
                 "--teacher-path", str(teacher), *extra, check=False)


def test_teacher_with_other_vocabulary(tiny_env, tmp_path):
    teacher = write_teacher(tiny_env, tmp_path / "t.pt", vocab_sha256="0" * 64)
    line = last_line(distil(tiny_env, tmp_path, teacher))
    assert line.startswith("fairseq_crild.teacher.TeacherMismatchError: teacher ")
    assert teacher in line and "vocabulary differs" in line and "different symbols" in line


@pytest.mark.parametrize("classes, labels, needle", [
    (3, ("a", "b", "c"), "has 3 outputs, the task has 2 classes"),
    (2, ("not_entailment", "entailment"), "differ from the task's"),
])
def test_teacher_with_other_labels(tiny_env, tmp_path, classes, labels, needle):
    teacher = write_teacher(tiny_env, tmp_path / "t.pt", num_classes=classes, label_names=labels)
    line = last_line(distil(tiny_env, tmp_path, teacher))
    assert line.startswith("fairseq_crild.teacher.TeacherMismatchError: teacher ")
    assert teacher in line and needle in line


def test_teacher_checkpoint_missing(tiny_env, tmp_path):
    missing = str(tmp_path / "no" / "teacher.pt")
    line = last_line(distil(tiny_env, tmp_path, missing))
    assert line == f"FileNotFoundError: checkpoint not found: {missing}"


def test_teacher_checkpoint_truncated(tiny_env, tmp_path):
    good = write_teacher(tiny_env, tmp_path / "good.pt")
    data = open(good, "rb").read()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    line = last_line(distil(tiny_env, tmp_path, bad))
    assert line.startswith("fairseq_crild.checkpoint_safety.UnsafeCheckpointError: cannot read "
                           f"checkpoint {bad}: ")
    assert line.endswith("(truncated or not a torch checkpoint)")


def test_data_folder_missing_a_split(tiny_env, tmp_path):
    data = tmp_path / "data-bin"
    shutil.copytree(tiny_env["data"], data)
    for ext in (".bin", ".idx"):
        os.remove(data / "input0" / f"valid{ext}")
    out = train(data, tmp_path / "run", *STUDENT, "--criterion", "glue_ce", check=False)
    line = last_line(out)
    assert line.startswith("fairseq_crild.tasks.distill_glue.GlueDataError: ")
    assert f"split 'valid' is missing from {data}" in line
    assert "splits present: ['test', 'train']" in line


def test_max_positions_beyond_the_position_table(tiny_env, tmp_path):
    out = train(tiny_env["data"], tmp_path / "run", *STUDENT, "--criterion", "glue_ce",
                "--max-positions", "256", check=False)
    line = last_line(out)
    assert line == ("fairseq_crild.tasks.distill_glue.GlueDataError: --max-positions 256 "
                    "exceeds the model's position table (128); lower --max-positions")


def test_world_size_that_does_not_divide_the_global_batch(tiny_env, tmp_path):
    """torchrun's variables for a 3-process job: the error comes before any rendezvous."""
    env = {**os.environ, "WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    out = train(tiny_env["data"], tmp_path / "run", *STUDENT, "--criterion", "glue_ce",
                "--global-batch-size", "8", "--batch-size", "8", check=False, env=env)
    line = last_line(out)
    assert line.startswith("fairseq_crild.distributed.DistributedConfigError: "
                           "--global-batch-size 8 is not divisible by world size 3 x "
                           "--update-freq 1 = 3")


@pytest.mark.parametrize("extra, needle", [
    (["--update-freq", "2", "--global-batch-size", "9"],
     "--global-batch-size 9 is not divisible by world size 1 x --update-freq 2 = 2"),
    (["--global-batch-size", "32"],
     "--batch-size 8 (per process) contradicts --global-batch-size 32 / (1 process(es) x "
     "--update-freq 1) = 32"),
])
def test_global_batch_inconsistent_with_the_launch(tiny_env, tmp_path, extra, needle):
    out = train(tiny_env["data"], tmp_path / "run", *STUDENT, "--criterion", "glue_ce", *extra,
                check=False)
    line = last_line(out)
    assert line.startswith("fairseq_crild.distributed.DistributedConfigError: ")
    assert needle in line
