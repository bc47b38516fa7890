"""Precision handling of ``cr_ild`` under --fp16 / --bf16.

fairseq halves the criterion (``half()``) under --fp16 and casts it (``to(dtype)``) under
--bf16. The learned projection follows the student; the EMA copy must not: its steps of
(1 - decay) = 0.1% are below half precision's resolution, so a half EMA would never move.
The teacher follows the student's device and dtype at every forward (it is no module of the
criterion, so no cast reaches it). BERT-EMD's layer weights keep float64 by themselves
(:class:`fairseq_crild.distill.emd.EmdLayerWeights`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

from torch import nn

if TYPE_CHECKING:  # typing only: the task hands the criterion its teacher
    from fairseq_crild.distill.teacher import FrozenTeacher


class KeepsFp32Children(nn.Module):
    """A module whose children named in ``fp32_children`` stay float32 through ``half()``
    and ``to()`` (a ``.float()`` after the cast; absent or None children are skipped)."""

    fp32_children: Tuple[str, ...] = ()

    def _keep_fp32(self) -> None:
        for name in self.fp32_children:
            child = getattr(self, name, None)
            if child is not None:
                child.float()

    def half(self):  # noqa: D102 (nn.Module's, then the fp32 children back)
        super().half()
        self._keep_fp32()
        return self

    def to(self, *args: Any, **kwargs: Any):  # noqa: D102
        super().to(*args, **kwargs)
        self._keep_fp32()
        return self


def follow_student(teacher: "FrozenTeacher", student: nn.Module) -> None:
    """Moves/casts the teacher to the student's device and floating dtype (once)."""
    student_param = next(student.parameters())
    teacher.follow(student_param.device, student_param.dtype)
