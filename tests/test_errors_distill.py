"""Bad set-ups stop fairseq-train with one clear last line: the error type and a message
naming the option or file. fairseq prints the traceback above it; the last line
is what a user reads."""

import json
import os
import shutil
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from fairseq_crild.data.dictionary import load_bert_dictionary, vocab_fingerprint
from fairseq_crild.models.loading import load_bert
from fairseq_crild.patches.distributed import DistributedConfigError, apply_global_batch
from tests.conftest import run_script
from tests.test_fairseq_train import COMMON

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
    model, _ = load_bert(str(tiny_env["ckpt"] / "model.pt"), dictionary)
    model.register_classification_head("glue", num_classes=num_classes)
    state = torch.load(tiny_env["ckpt"] / "model.pt", map_location="cpu")  # plain types
    state["model"] = model.state_dict()
    state["task_state"] = {"vocab_sha256": vocab_sha256 or vocab_fingerprint(dictionary),
                           "label_names": list(label_names)}
    torch.save(state, path)
    return str(path)


def distil_args(teacher):
    return [*STUDENT, "--criterion", "kd", "--teacher-path", str(teacher)]


# Runs fairseq-train's entry point once per case in ONE interpreter (8 start-ups of fairseq
# would cost a minute of CPU) and prints, per case, the line Python prints last for an
# uncaught exception (traceback.format_exception_only). Two cases also run as real
# fairseq-train processes, whose last stderr line must be the same (test below).
DRIVER = """
import json, os, sys, traceback
from fairseq_cli.train import cli_main
out = {}
for name, (argv, env) in json.loads(sys.argv[1]).items():
    saved = dict(os.environ)
    os.environ.update(env)
    sys.argv = ["fairseq-train", *argv]
    try:
        cli_main()
        out[name] = "no error"
    except BaseException as err:
        out[name] = traceback.format_exception_only(type(err), err)[-1].strip()
    finally:
        os.environ.clear()
        os.environ.update(saved)
print("RESULTS " + json.dumps(out))
"""
REAL_PROCESSES = ("truncated", "world_size")


@pytest.fixture(scope="module")
def failures(tiny_env, tmp_path_factory):
    """{case: (path involved, last line)} of every bad set-up; "<case>:process": the last
    stderr line of a real fairseq-train process."""
    base = tmp_path_factory.mktemp("errors")
    good = write_teacher(tiny_env, base / "good.pt")
    truncated = base / "truncated.pt"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    split_less = base / "data-bin"
    shutil.copytree(tiny_env["data"], split_less)
    for ext in (".bin", ".idx"):
        os.remove(split_less / "input0" / f"valid{ext}")
    # torchrun's variables for a 3-process job: the error comes before any rendezvous
    torchrun = {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    glue_ce = [*STUDENT, "--criterion", "glue_ce"]
    cases = {
        "vocab": (write_teacher(tiny_env, base / "vocab.pt", vocab_sha256="0" * 64), {}),
        "classes": (write_teacher(tiny_env, base / "classes.pt", num_classes=3,
                                  label_names=("a", "b", "c")), {}),
        "missing": (str(base / "no" / "teacher.pt"), {}),
        "truncated": (str(truncated), {}),
        "split": (str(split_less), {"data": split_less, "args": glue_ce}),
        "max_positions": ("", {"args": [*glue_ce, "--max-positions", "256"]}),
        "world_size": ("", {"args": [*glue_ce, "--global-batch-size", "8"], "env": torchrun}),
        "update_freq": ("", {"args": [*glue_ce, "--update-freq", "2", "--batch-size", "4",
                                      "--global-batch-size", "9"]}),
    }
    argv = {name: ([str(how.get("data", tiny_env["data"])), *COMMON, "--save-dir",
                    str(base / name), *(how.get("args") or distil_args(path))],
                   how.get("env", {}))
            for name, (path, how) in cases.items()}

    def run(job):
        if job == "driver":
            out = run_script("-c", DRIVER, json.dumps(argv))
            return json.loads(out.stdout.split("RESULTS ", 1)[1])
        args, env = argv[job]
        out = run_script("-m", "fairseq_cli.train", *args, check=False,
                         env={**os.environ, **env})
        return {f"{job}:process": last_line(out)}

    results = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        for found in pool.map(run, ["driver", *REAL_PROCESSES]):
            results.update(found)
    out = {name: (path, results[name]) for name, (path, _) in cases.items()}
    out.update({f"{n}:process": (cases[n][0], results[f"{n}:process"]) for n in REAL_PROCESSES})
    return out


def test_real_processes_end_with_the_same_line(failures):
    """What the driver reports is what fairseq-train itself prints last."""
    for name in REAL_PROCESSES:
        assert failures[f"{name}:process"] == failures[name]
        assert failures[name][1] != "no error"


def test_teacher_with_other_vocabulary(failures):
    teacher, line = failures["vocab"]
    assert line.startswith("fairseq_crild.distill.teacher.TeacherMismatchError: teacher ")
    assert teacher in line and "vocabulary differs" in line and "different symbols" in line


def test_teacher_with_another_label_count(failures):
    teacher, line = failures["classes"]
    assert line.startswith("fairseq_crild.distill.teacher.TeacherMismatchError: teacher ")
    assert teacher in line and "has 3 outputs, the task has 2 classes" in line


def test_teacher_with_other_label_names(tiny_env, tmp_path):
    """Same count, another order: checked at load time (in-process: same code path)."""
    from fairseq_crild.distill.teacher import FrozenTeacher, TeacherMismatchError

    path = write_teacher(tiny_env, tmp_path / "t.pt",
                         label_names=("not_entailment", "entailment"))
    dictionary = load_bert_dictionary(str(tiny_env["ckpt"] / "dict.txt"))
    with pytest.raises(TeacherMismatchError, match="labels .* differ from the task's"):
        FrozenTeacher.load(path, dictionary, "glue", 2, ["entailment", "not_entailment"])


def test_teacher_checkpoint_missing(failures):
    missing, line = failures["missing"]
    assert line == f"FileNotFoundError: checkpoint not found: {missing}"


def test_teacher_checkpoint_truncated(failures):
    bad, line = failures["truncated"]
    assert line.startswith("fairseq_crild.patches.checkpoint_safety.UnsafeCheckpointError: "
                           f"cannot read checkpoint {bad}: ")
    assert line.endswith("(truncated or not a torch checkpoint)")


def test_data_folder_missing_a_split(failures):
    data, line = failures["split"]
    assert line.startswith("fairseq_crild.tasks.distill_glue.GlueDataError: ")
    assert f"split 'valid' is missing from {data}" in line
    assert "splits present: ['test', 'train']" in line


def test_max_positions_beyond_the_position_table(failures):
    _, line = failures["max_positions"]
    assert line == ("fairseq_crild.tasks.distill_glue.GlueDataError: --max-positions 256 "
                    "exceeds the model's position table (128); lower --max-positions")


def test_world_size_that_does_not_divide_the_global_batch(failures):
    _, line = failures["world_size"]
    assert line.startswith("fairseq_crild.patches.distributed.DistributedConfigError: "
                           "--global-batch-size 8 is not divisible by world size 3 x "
                           "--update-freq 1 = 3")


def test_update_freq_that_does_not_divide_the_global_batch(failures):
    _, line = failures["update_freq"]
    assert line.startswith("fairseq_crild.patches.distributed.DistributedConfigError: "
                           "--global-batch-size 9 is not divisible by world size 1 x "
                           "--update-freq 2 = 2")


def _cfg(batch_size, global_batch, world=1, update_freq=(1,)):
    return types.SimpleNamespace(
        task=types.SimpleNamespace(global_batch_size=global_batch),
        dataset=types.SimpleNamespace(batch_size=batch_size, batch_size_valid=None),
        optimization=types.SimpleNamespace(update_freq=list(update_freq)),
        distributed_training=types.SimpleNamespace(distributed_world_size=world))


def test_global_batch_sets_the_per_process_batch():
    """fairseq's --batch-size stays per process; --global-batch-size derives it."""
    cfg = _cfg(None, 32, world=4, update_freq=(2,))
    apply_global_batch(cfg)
    assert cfg.dataset.batch_size == 4 and cfg.dataset.batch_size_valid == 4
    cfg = _cfg(8, 0, world=4)  # off: untouched
    apply_global_batch(cfg)
    assert cfg.dataset.batch_size == 8
    with pytest.raises(DistributedConfigError, match=r"--batch-size 8 \(per process\) "
                       r"contradicts --global-batch-size 32 / \(2 process\(es\) x "
                       r"--update-freq 1\) = 16"):
        apply_global_batch(_cfg(8, 32, world=2))
    with pytest.raises(DistributedConfigError, match="needs one --update-freq value"):
        apply_global_batch(_cfg(None, 32, update_freq=(1, 2)))
