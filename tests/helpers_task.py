"""An in-memory task for criterion tests that implements the criterion–task contract
(``fairseq_crild.criterions.contract.DistillTaskState``) with teachers given as models."""

from __future__ import annotations

import types
from typing import Optional, Sequence

from fairseq_crild.distill.teacher import FrozenTeacher
from tests.helpers_bert import toy_dictionary


class FakeDistillTask:
    """Every attribute of ``DistillTaskState``, set as the real task starts: epoch 1, no
    update done, uniform teacher weights, seed 1, the first teacher as the ILD teacher."""

    def __init__(self, teachers: Sequence, weights: Optional[Sequence[float]] = None,
                 regression: bool = False, names: Optional[Sequence[str]] = None,
                 current_epoch: int = 1, num_updates: int = 0):
        names = names or [f"in-memory-{i}" for i in range(len(teachers))]
        self.teachers = [FrozenTeacher(t, name) for t, name in zip(teachers, names)]
        self.teacher_weights = (list(weights) if weights is not None
                                else [1.0 / len(self.teachers)] * len(self.teachers))
        self.teacher = self.teachers[0]
        self.dictionary = toy_dictionary()
        self.cfg = types.SimpleNamespace(classification_head_name="glue", seed=1,
                                         max_positions=128)
        self.regression, self.num_classes = regression, 1 if regression else 2
        self.label_names: Sequence[str] = ()
        self.current_epoch, self.num_updates = current_epoch, num_updates


class OneTeacherTask(FakeDistillTask):
    """One in-memory teacher (the intermediate-layer losses' and the KD teacher)."""

    def __init__(self, teacher, current_epoch: int = 1):
        super().__init__([teacher], names=["in-memory"], current_epoch=current_epoch)
