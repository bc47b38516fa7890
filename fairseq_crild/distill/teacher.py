"""The frozen teacher: loaded once per process, next to the student, never trained or saved.

It lives on the task (not inside the student), so it stays out of checkpoints, the optimizer,
DDP wrapping and fairseq's fp16 conversion; :meth:`FrozenTeacher.follow` moves and casts it to
the student's device and dtype explicitly.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq.data import Dictionary
from torch import Tensor

from fairseq_crild.data.dictionary import vocab_fingerprint
from fairseq_crild.distill.checkpoint_roles import check_role
from fairseq_crild.errors import CrildError
from fairseq_crild.models.bert import BertModel
from fairseq_crild.models.loading import head_sizes, load_checkpoint
from fairseq_crild.models.requests import FeatureRequest

logger = logging.getLogger(__name__)


class TeacherMismatchError(CrildError, ValueError):
    """Teacher and student disagree on vocabulary or labels (distillation would be garbage)."""


def check_compatible(state: Dict[str, Any], path: str, dictionary: Dictionary,
                     head_name: str, num_classes: int, label_names: List[str],
                     dict_path: Optional[str] = None, what: str = "teacher") -> None:
    """Refuses a teacher (``what``: or another checkpoint used on the task's data) whose
    vocabulary, head or label set differs from the task's."""
    sd = state["model"]
    if "embeddings.word_embeddings.weight" not in sd:
        raise TeacherMismatchError(f"{what} {path}: not a checkpoint of this plugin's BERT / "
                                   "crild_roberta models nor a fairseq RoBERTa")
    rows = sd["embeddings.word_embeddings.weight"].shape[0]
    task_state = state.get("task_state") or {}
    want = vocab_fingerprint(dictionary)
    got = task_state.get("vocab_sha256")
    if rows != len(dictionary) or (got is not None and got != want):
        data_dict = dict_path or "the data's dict.txt"
        raise TeacherMismatchError(
            f"{what} {path}: vocabulary differs from {data_dict} ({rows} embedding "
            f"rows vs {len(dictionary)} symbols"
            + ("" if got is None else ", different symbols") + "); binarise the data with the "
            "dict.txt of the teacher's conversion"
        )
    heads = head_sizes(sd)
    if head_name not in heads:
        raise TeacherMismatchError(
            f"{what} {path}: no classification head {head_name!r} (it has {sorted(heads)}); "
            "fine-tune the teacher on this task first (criterion glue_ce), or name its head "
            "with --classification-head-name"
        )
    if heads[head_name] != num_classes:
        raise TeacherMismatchError(
            f"{what} {path}: head {head_name!r} has {heads[head_name]} outputs, the task has "
            f"{num_classes} classes"
        )
    check_labels(state, path, label_names, what)


def _norm(names) -> List[str]:
    return [str(n).strip().lower() for n in names]


def check_labels(state: Dict[str, Any], path: str, label_names: List[str],
                 what: str = "teacher") -> None:
    """Refuses a checkpoint whose outputs mean other labels than the data's (compared by
    name, ignoring case): swapped outputs would be distilled silently. A converted HF
    classifier with transformers' generic LABEL_i names carries none: warned, not refused."""
    task_state = state.get("task_state") or {}
    teacher_labels = task_state.get("label_names")
    converted = bool((state.get("extra_state") or {}).get("converted_from"))
    if teacher_labels is None:
        hf_names = task_state.get("hf_id2label")
        if hf_names and label_names:
            logger.warning(f"{what} {path}: its classifier's labels are {list(hf_names)} "
                           f"(generic): not checked; output i is taken as the data's label i of "
                           f"{list(label_names)}. Re-convert with --label-names to check them")
        return
    if not label_names or _norm(teacher_labels) == _norm(label_names):
        return
    ours, theirs = list(teacher_labels), list(label_names)
    differ = ", ".join(f"output {i} is {a!r} for the {what}, {b!r} in the data"
                       for i, (a, b) in enumerate(zip(ours, theirs)) if a.lower() != b.lower())
    if sorted(_norm(ours)) == sorted(_norm(theirs)):
        fix = ("re-convert it with --label-order " + ",".join(theirs) + " (reorders its "
               "outputs into the data's order)" if converted else
               "its outputs are in another order than the data's labels; binarise the data "
               "with the teacher's label order or fine-tune a teacher on this data")
        kind = "in another order"
    else:
        fix = ("if its outputs really mean the data's labels in this order, re-convert it with "
               "--label-names " + ",".join(theirs) if converted else
               "fine-tune a teacher on this data")
        kind = "other names"
    raise TeacherMismatchError(
        f"{what} {path}: labels {ours} differ from the task's {theirs} ({kind}: {differ}); "
        f"{fix}")


def _symbols(d: Dictionary) -> List[str]:
    return [d[i] for i in range(len(d))]


def check_roberta_training_data(state: Dict[str, Any], path: str, dictionary: Dictionary,
                                dict_path: Optional[str], label_names: List[str]) -> None:
    """Compares the dictionaries of the folder the RoBERTa teacher was fine-tuned on (when it
    is readable here) with the distillation data's; raises naming both files. Without that
    folder only sizes can be compared (embedding rows, head outputs: see check_compatible)."""
    data = (state.get("roberta_source") or {}).get("task", {}).get("data")
    ours = dict_path or "the data's input0/dict.txt"
    if not data or not isinstance(data, str):
        logger.warning(f"teacher {path}: its config names no data folder; vocabulary and "
                       "labels checked by size only")
        return
    teacher_dict = os.path.join(data, "input0", "dict.txt")
    if not os.path.isfile(teacher_dict):
        logger.warning(f"teacher {path}: {teacher_dict} (its fine-tuning data) is not here; "
                       "vocabulary and labels checked by size only")
        return
    theirs = Dictionary.load(teacher_dict)
    theirs.add_symbol("<mask>")  # as fairseq's sentence_prediction/masked_lm tasks do
    if _symbols(theirs) != _symbols(dictionary):
        raise TeacherMismatchError(
            f"teacher {path}: its vocabulary ({teacher_dict}, {len(theirs)} symbols with "
            f"<mask>) differs from {ours} ({len(dictionary)} symbols); binarise the data with "
            "the teacher's dict.txt (scripts/prepare_glue_roberta.py --dict)")
    label_dict = os.path.join(data, "label", "dict.txt")
    if label_names and os.path.isfile(label_dict):
        d = Dictionary.load(label_dict)
        teacher_labels = _symbols(d)[d.nspecial:]
        if teacher_labels != list(label_names):
            raise TeacherMismatchError(
                f"teacher {path}: its classes are ordered as {label_dict} says "
                f"({teacher_labels}), the task's as {list(label_names)}; fine-tune the teacher "
                "on a folder written by scripts/prepare_glue_roberta.py (fairseq's recipe "
                "orders labels by frequency)")


class FrozenTeacher:
    """A BERT (or RoBERTa) teacher in eval mode with ``requires_grad`` off, run without
    autograd."""

    def __init__(self, model: BertModel, path: str):
        self.model = model.eval()
        self.path = path
        for p in self.model.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, path: str, dictionary: Dictionary, head_name: str, num_classes: int,
             label_names: List[str], dict_path: Optional[str] = None,
             allow_any_role: bool = False) -> "FrozenTeacher":
        """Our checkpoints, or a fairseq ``roberta`` one (converted into ``crild_roberta``,
        its fine-tuning data's dictionaries compared with ``dict_path``'s when readable).
        A stage-1 ILD student is refused by its role (see checkpoint_roles) unless
        ``allow_any_role`` (--allow-any-teacher-role)."""
        ckpt = load_checkpoint(path, head_name, dictionary.pad())
        if ckpt.from_fairseq_roberta:
            check_roberta_training_data(ckpt.state, path, dictionary, dict_path, label_names)
        check_compatible(ckpt.state, path, dictionary, head_name, num_classes, label_names,
                         dict_path)
        if not allow_any_role:
            try:
                check_role(ckpt.saved, f"teacher {path}", "teacher", ckpt.heads, head_name,
                           "--allow-any-teacher-role")
            except ValueError as err:
                raise TeacherMismatchError(str(err)) from None
        model = ckpt.build(dictionary)
        cfg = model.cfg
        logger.info(f"teacher {path}: {cfg.encoder_layers} layers x {cfg.encoder_embed_dim}, "
                    f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, frozen")
        return cls(model, path)

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size

    def follow(self, device: torch.device, dtype: torch.dtype) -> None:
        """Moves/casts the teacher to the student's device and floating dtype (once)."""
        p = next(self.model.parameters())
        if p.device != device or p.dtype != dtype:
            self.model.to(device=device, dtype=dtype)

    def __call__(self, net_input: Dict[str, Tensor], head_name: Optional[str],
                 request: Optional[FeatureRequest] = None) -> Tuple[Tensor, Dict[str, Any]]:
        # no_grad rather than inference_mode: the student's losses save teacher outputs for
        # their backward pass, which inference tensors may not be.
        with torch.no_grad():
            return self.model(**net_input, classification_head_name=head_name, request=request)


# --------------------------------------------------------------------------- several teachers


def split_teacher_paths(spec: str) -> List[str]:
    """``--teacher-path a.pt,b.pt`` -> ``["a.pt", "b.pt"]``: comma-separated, as fairseq's
    other list options (so a teacher path may not contain a comma)."""
    paths = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in paths):
        raise ValueError(f"--teacher-path {spec!r}: expected one checkpoint or a comma-separated "
                         "list of checkpoints, with no empty entries")
    return paths


def parse_teacher_weights(spec: str, num_teachers: int) -> List[float]:
    """``--teacher-weights 2,1`` -> ``[2/3, 1/3]``: one weight >= 0 per teacher, normalised
    to sum 1; empty gives every teacher the same weight."""
    if not spec.strip():
        return [1.0 / num_teachers] * num_teachers
    try:
        weights = [float(w) for w in spec.split(",")]
    except ValueError:
        raise ValueError(f"--teacher-weights {spec!r}: expected comma-separated numbers") from None
    if len(weights) != num_teachers:
        raise ValueError(f"--teacher-weights {spec!r}: {len(weights)} weights for "
                         f"{num_teachers} teachers in --teacher-path")
    if any(not w >= 0 or w == float("inf") for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--teacher-weights {spec!r}: weights must be finite, >= 0 and not "
                         "all 0")
    total = sum(weights)
    return [w / total for w in weights]


def load_teachers(paths: List[str], dictionary: Dictionary, head_name: str, num_classes: int,
                  label_names: List[str], dict_path: Optional[str] = None,
                  allow_any_role: bool = False) -> List[FrozenTeacher]:
    """Loads and checks every teacher once (a path listed twice shares one frozen model);
    a mismatch names the offending entry of ``--teacher-path``."""
    loaded: Dict[str, FrozenTeacher] = {}
    teachers = []
    for k, path in enumerate(paths):
        if path not in loaded:
            try:
                loaded[path] = FrozenTeacher.load(path, dictionary, head_name, num_classes,
                                                  label_names, dict_path, allow_any_role)
            except TeacherMismatchError as err:
                if len(paths) == 1:
                    raise
                raise TeacherMismatchError(
                    f"--teacher-path entry {k + 1} of {len(paths)}: {err}") from None
        teachers.append(loaded[path])
    return teachers
