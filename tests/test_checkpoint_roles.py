"""Every checkpoint we write records its role; the wrong role, task or file is refused by name
(a stage-1 student, its head untrained, would otherwise pass as a teacher or a classifier and
predict one class for everything)."""

import argparse
import json
import shutil

import pytest
import torch

from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.distill import checkpoint_roles as roles
from fairseq_crild.distill.teacher import FrozenTeacher, TeacherMismatchError
from fairseq_crild.export.hub import GlueClassifier
from fairseq_crild.models.loading import read_checkpoint
from fairseq_crild.patches.checkpoint_safety import UnsafeCheckpointError
from tests.conftest import run_script
from tests.test_fairseq_train import teacher, train  # noqa: F401  (fixture: glue_ce teacher)

STUDENT = ["--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", "32",
           "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
           "--max-position-embeddings", "128"]
LABELS = ["entailment", "not_entailment"]


@pytest.fixture(scope="module")
def stages(tiny_env, teacher):  # noqa: F811
    """{stage1: cr_ild checkpoint (2 updates), stage2: kd checkpoint started from it}."""
    s1, s2 = tiny_env["base"] / "roles_stage1", tiny_env["base"] / "roles_stage2"
    train(tiny_env["data"], s1, *STUDENT, "--criterion", "cr_ild", "--teacher-path",
          str(teacher), "--init-student-from", str(tiny_env["ckpt"] / "model.pt"),
          "--ild-preset", "cr_ild", "--num-relation-heads", "4", "--max-update", "2",
          "--disable-validation")
    train(tiny_env["data"], s2, *STUDENT, "--criterion", "kd", "--teacher-path", str(teacher),
          "--finetune-from-model", str(s1 / "checkpoint_last.pt"), "--max-update", "2",
          "--disable-validation")
    return {"stage1": s1 / "checkpoint_last.pt", "stage2": s2 / "checkpoint_last.pt"}


def _recorded(path):
    return torch.load(path, map_location="cpu")["task_state"].get(roles.ROLE_KEY)


def test_every_checkpoint_we_write_records_its_role(tiny_env, teacher, stages):  # noqa: F811
    assert _recorded(teacher) == "teacher"
    assert _recorded(stages["stage1"]) == "ild_student"
    # stage 2 starts from the stage-1 checkpoint (--finetune-from-model) but records its own
    assert _recorded(stages["stage2"]) == "kd_student"
    assert _recorded(tiny_env["ckpt"] / "model.pt") == "converted_base"


@pytest.mark.parametrize("state, role", [
    ({"task_state": {"checkpoint_role": "kd_student"}, "cfg": {"criterion": {"_name": "cr_ild"}}},
     "kd_student"),  # the recorded role wins
    ({"task_state": {}, "cfg": {"criterion": {"_name": "cr_ild"}}}, "ild_student"),
    ({"cfg": {"criterion": {"_name": "glue_ce"}}}, "teacher"),
    ({"cfg": {"criterion": {"_name": "kd"}}}, "kd_student"),
    ({"cfg": None, "args": argparse.Namespace(criterion="sentence_prediction")}, "teacher"),
    ({"cfg": None, "args": argparse.Namespace(criterion="masked_lm")}, "converted_base"),
    ({"task_state": {}, "extra_state": {"converted_from": "/hf/bert"}}, "converted_base"),
    ({"task_state": {"checkpoint_role": "bogus"}, "cfg": {"criterion": {"_name": "x"}}},
     "unknown"),
    ({}, "unknown"),
])
def test_old_checkpoints_get_the_role_their_saved_criterion_implies(state, role):
    assert roles.checkpoint_role(state) == role


def _dictionary(tiny_env):
    return load_bert_dictionary(str(tiny_env["data"] / "input0" / "dict.txt"))


def test_stage1_student_is_refused_as_teacher_by_name(tiny_env, stages):
    path = str(stages["stage1"])
    with pytest.raises(TeacherMismatchError) as err:
        FrozenTeacher.load(path, _dictionary(tiny_env), "glue", 2, LABELS)
    msg = str(err.value)
    assert "stage-1 ILD student" in msg and path in msg and "--allow-any-teacher-role" in msg
    assert "\n" not in msg
    # the override, and the roles that may teach
    FrozenTeacher.load(path, _dictionary(tiny_env), "glue", 2, LABELS, allow_any_role=True)
    FrozenTeacher.load(str(stages["stage2"]), _dictionary(tiny_env), "glue", 2, LABELS)


def test_fairseq_train_refuses_a_stage1_teacher(tiny_env, stages, tmp_path):
    args = [*STUDENT, "--criterion", "kd", "--teacher-path", str(stages["stage1"]),
            "--max-update", "1", "--disable-validation"]
    out = train(tiny_env["data"], tmp_path / "run", *args, check=False)
    assert out.returncode != 0 and "stage-1 ILD student" in out.stderr
    out = train(tiny_env["data"], tmp_path / "run2", *args, "--allow-any-teacher-role")
    assert out.returncode == 0


def test_classifier_refuses_roles_by_name(tiny_env, stages, teacher):  # noqa: F811
    data = str(tiny_env["data"])
    with pytest.raises(ValueError, match="stage-1 ILD student.*allow_any_role"):
        GlueClassifier.from_pretrained(str(stages["stage1"]), data_name_or_path=data)
    clf = GlueClassifier.from_pretrained(str(stages["stage1"]), data_name_or_path=data,
                                         allow_any_role=True)
    assert clf.labels == LABELS
    with pytest.raises(ValueError, match="converted pretrained base.*no classification head"):
        GlueClassifier.from_pretrained(str(tiny_env["ckpt"] / "model.pt"))  # no data needed
    for ok in (teacher, stages["stage2"]):
        assert GlueClassifier.from_pretrained(str(ok), data_name_or_path=data).labels == LABELS


def _retagged(tiny_env, tmp_path, task, labels):
    """The RTE data folder relabelled as another task (same vocabulary, tokens, sizes)."""
    out = tmp_path / task
    shutil.copytree(tiny_env["data"], out)
    meta = json.loads((out / "meta.json").read_text())
    meta.update(task=task, label_names=labels)
    (out / "meta.json").write_text(json.dumps(meta))
    return str(out)


def test_classifier_checks_task_and_labels_against_data(tiny_env, teacher, tmp_path):  # noqa: F811
    wnli = _retagged(tiny_env, tmp_path, "WNLI", ["0", "1"])
    with pytest.raises(ValueError, match=r"trained on RTE but .*WNLI.*--allow-other-task"):
        GlueClassifier.from_pretrained(str(teacher), data_name_or_path=wnli)
    with pytest.raises(ValueError, match=r"labels \['entailment', 'not_entailment'\] differ"):
        GlueClassifier.from_pretrained(str(teacher), data_name_or_path=wnli,
                                       allow_other_task=True)
    qnli = _retagged(tiny_env, tmp_path, "QNLI", LABELS)  # same label names: only the task
    with pytest.raises(ValueError, match="trained on RTE"):
        GlueClassifier.from_pretrained(str(teacher), data_name_or_path=qnli)
    clf = GlueClassifier.from_pretrained(str(teacher), data_name_or_path=qnli,
                                         allow_other_task=True)
    assert clf.labels == LABELS
    swapped = _retagged(tiny_env, tmp_path, "RTE", LABELS[::-1])
    with pytest.raises(ValueError, match="differ"):
        GlueClassifier.from_pretrained(str(teacher), data_name_or_path=swapped)


def test_predict_glue_refuses_stage1_and_other_task(tiny_env, stages, teacher, tmp_path):  # noqa: F811,E501
    base = ["scripts/predict_glue.py", "--out-dir", str(tmp_path / "out")]
    bad = run_script(*base, str(stages["stage1"]), "--data", str(tiny_env["data"]), check=False)
    assert bad.returncode == 2 and "stage-1 ILD student" in bad.stderr
    errors = [ln for ln in bad.stderr.splitlines() if not ln.startswith("INFO:")]
    assert errors == [errors[0]] and errors[0].startswith("predict_glue: error: ")
    wnli = _retagged(tiny_env, tmp_path, "WNLI", ["0", "1"])
    bad = run_script(*base, str(teacher), "--data", wnli, check=False)
    assert bad.returncode == 2 and "trained on RTE" in bad.stderr
    assert not (tmp_path / "out").exists()  # nothing written on a refusal


@pytest.mark.parametrize("obj, words", [
    (torch.ones(3), "holds an object of type Tensor"),
    ([1, 2, 3], "holds an object of type list"),
    ({"weight": torch.ones(2)}, "dict without 'model' (keys: weight)"),
    ({"model": torch.ones(2)}, "its 'model' is a Tensor"),
    ({"model": {"w": torch.ones(2)}}, "not a complete fairseq checkpoint"),
    (None, "holds an object of type NoneType"),
])
def test_non_fairseq_pickles_give_one_clear_line(tiny_env, tmp_path, obj, words):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(str(path))
    msg = str(err.value)
    assert words in msg and str(path) in msg and "\n" not in msg and len(msg) < 400
    with pytest.raises(UnsafeCheckpointError):
        GlueClassifier.from_pretrained(str(path), data_name_or_path=str(tiny_env["data"]))
    with pytest.raises(UnsafeCheckpointError):
        FrozenTeacher.load(str(path), _dictionary(tiny_env), "glue", 2, LABELS)
