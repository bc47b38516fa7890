"""The criterion–task contract (fairseq_crild.criterions.contract): DistillGlueTask implements
it, the test fakes implement it, and a task missing one of its attributes fails at once,
naming the attribute, instead of a criterion reading a silent default."""

import pytest

from fairseq_crild.criterions import contract
from fairseq_crild.criterions.contract import (
    DistillTaskState,
    GlueTaskState,
    MixesExamples,
    PadsEveryBatch,
    StudentPreparer,
    TaskContractError,
)
from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.criterions.glue_ce import GlueCrossEntropyCriterion
from fairseq_crild.criterions.kd import KdCriterion
from fairseq_crild.distill.teacher import FrozenTeacher
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask
from tests.helpers_bert import toy_bert
from tests.helpers_task import FakeDistillTask, OneTeacherTask

DISTILL_MEMBERS = ("cfg", "regression", "num_classes", "label_names", "dictionary", "teachers",
                   "teacher_weights", "teacher", "num_updates", "current_epoch")


def test_the_contract_lists_what_criterions_read():
    assert contract.members(GlueTaskState) == DISTILL_MEMBERS[:4]
    assert contract.members(DistillTaskState) == DISTILL_MEMBERS
    assert contract.members(PadsEveryBatch) == ("pad_every_batch_to",)
    assert contract.members(StudentPreparer) == ("prepare_student",)
    assert contract.members(MixesExamples) == ("use_mixup",)


def test_distill_glue_task_implements_the_contract(tiny_env):
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(tiny_env["data"]), seed=1))
    # statically: no property is evaluated, so no teacher is loaded
    assert contract.missing(task, DistillTaskState) == []
    assert task._teachers is None
    assert isinstance(task, PadsEveryBatch)
    assert (task.current_epoch, task.num_updates) == (1, 0)  # the defaults, explicit
    # isinstance evaluates the teacher properties on Python < 3.12: give it teachers
    task._teachers = [FrozenTeacher(toy_bert(2, 16, 2, 0), "in-memory")]
    assert isinstance(task, DistillTaskState) and isinstance(task, GlueTaskState)
    assert task.teacher is task.teachers[0] and task.teacher_weights == [1.0]
    assert list(task.label_names) == ["entailment", "not_entailment"]


def test_the_criterions_implement_the_task_side(tiny_env):
    task = OneTeacherTask(toy_bert(2, 16, 2, 0))
    crit = CrIldCriterion(CrIldConfig(max_epoch=1, max_update=0), task)
    assert isinstance(crit, StudentPreparer) and isinstance(crit, MixesExamples)
    assert isinstance(task, DistillTaskState) and not isinstance(task, PadsEveryBatch)
    assert isinstance(FakeDistillTask([toy_bert(2, 16, 2, 0)] * 2, [0.5, 0.5]),
                      DistillTaskState)


@pytest.mark.parametrize("gone", ["num_updates", "current_epoch", "teachers",
                                  "teacher_weights", "teacher", "label_names"])
def test_a_fake_missing_an_attribute_fails_clearly(gone):
    task = OneTeacherTask(toy_bert(2, 16, 2, 0))
    delattr(task, gone)
    assert not isinstance(task, DistillTaskState)
    assert contract.missing(task, DistillTaskState) == [gone]
    for build in (lambda: CrIldCriterion(CrIldConfig(max_epoch=1, max_update=0), task),
                  lambda: KdCriterion(task, temperature=2.0, alpha=0.0)):
        with pytest.raises(TaskContractError, match=f"has no {gone}; use --task distill_glue"):
            build()
    if gone == "label_names":
        with pytest.raises(TaskContractError, match="criterion glue_ce needs a task "
                                                    "implementing GlueTaskState"):
            GlueCrossEntropyCriterion(task)
    else:  # glue_ce reads only the label space
        GlueCrossEntropyCriterion(task)
