"""The criterion–task contract: what a criterion of this plugin reads from its task, and what
the task asks of a criterion.

``DistillGlueTask`` implements :class:`GlueTaskState` and :class:`DistillTaskState`; the
criterions type against them (``glue_ce``: the first; ``kd`` and ``cr_ild``: the second)
and check their task with :func:`require` when they are built, so a task (or a test fake)
without one of the attributes fails at once, naming it, instead of reading a silent default
later. The task side: a criterion that implements :class:`StudentPreparer` gets the student
before fairseq wraps it in DDP and builds the optimizer (``prepare_student``); one that
implements :class:`MixesExamples` tells the task whether it mixes examples (``use_mixup``:
``--train-batches auto`` then draws fresh mixup partners each epoch). A task that can pad
every batch to one length implements :class:`PadsEveryBatch` (the authors' B x 128 grid
for ``--ild-padding include``).

The protocols are ``runtime_checkable``; on Python < 3.12 ``isinstance`` evaluates
properties (``DistillGlueTask.teachers`` loads the teachers), so the criterions check with
:func:`require`, which looks attributes up statically (nothing is evaluated or loaded).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, List, Protocol, Sequence, Tuple, runtime_checkable

from fairseq_crild.errors import CrildError

if TYPE_CHECKING:  # typing only: the criterions import the teacher themselves
    from fairseq.data import Dictionary

    from fairseq_crild.distill.teacher import FrozenTeacher


class TaskContractError(CrildError, TypeError):
    """A task lacks an attribute of the contract a criterion needs; the message names it."""


class CriterionTaskConfig(Protocol):
    """The task options a criterion reads (``task.cfg``)."""

    classification_head_name: str
    max_positions: int  # the length --ild-padding include pads every batch to
    seed: int  # seeds the mixup draws, with the update and the batch's place in it


@runtime_checkable
class GlueTaskState(Protocol):
    """What every GLUE criterion reads: the head, the label space."""

    cfg: CriterionTaskConfig
    regression: bool
    num_classes: int  # 1 for regression
    label_names: Sequence[str]  # in label-id order; () when the data has none recorded


@runtime_checkable
class DistillTaskState(GlueTaskState, Protocol):
    """What a distillation criterion reads: the teachers and the training clock."""

    dictionary: "Dictionary"
    teachers: List["FrozenTeacher"]  # --teacher-path, in order (prediction-layer KD)
    teacher_weights: List[float]  # normalised --teacher-weights of ``teachers``
    teacher: "FrozenTeacher"  # the teacher of the intermediate-layer losses (ILD)
    num_updates: int  # optimizer updates done; 0 before the first (set by train_step)
    current_epoch: int  # 1-based epoch being trained (set by begin_epoch)


@runtime_checkable
class PadsEveryBatch(Protocol):
    """A task that can pad every batch (train and valid) to one fixed length."""

    def pad_every_batch_to(self, length: int) -> None: ...


@runtime_checkable
class StudentPreparer(Protocol):
    """A criterion the task hands the student to (``DistillGlueTask.build_criterion``), e.g.
    to resolve its layer map and freeze the parameters its loss never reaches."""

    def prepare_student(self, student: Any) -> None: ...


@runtime_checkable
class MixesExamples(Protocol):
    """A criterion that says whether it mixes examples (``--train-batches auto`` reads it;
    a criterion without the attribute mixes none)."""

    use_mixup: bool


def members(protocol: type) -> Tuple[str, ...]:
    """The attributes and methods ``protocol`` (and its protocol bases) declare, in order."""
    names: List[str] = []
    for cls in reversed(protocol.__mro__):
        if cls is object or cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        declared = list(cls.__dict__.get("__annotations__", {}))
        declared += [n for n, v in cls.__dict__.items()
                     if callable(v) and not n.startswith("_")]
        names += [n for n in declared if n not in names]
    return tuple(names)


def missing(obj: Any, protocol: type) -> List[str]:
    """The members of ``protocol`` that ``obj`` lacks, looked up statically: a property is
    present without being evaluated."""
    absent = object()
    return [name for name in members(protocol)
            if inspect.getattr_static(obj, name, absent) is absent]


def require(task: Any, protocol: type, who: str) -> None:
    """Raises :class:`TaskContractError` naming what ``task`` lacks of ``protocol``."""
    lacking = missing(task, protocol)
    if lacking:
        raise TaskContractError(
            f"criterion {who} needs a task implementing {protocol.__name__} "
            f"(fairseq_crild.criterions.contract); task {type(task).__name__} has no "
            f"{', '.join(lacking)}; use --task distill_glue")
