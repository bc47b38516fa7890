"""What a checkpoint is for: its *role*, recorded when it is written and checked when it is used.

A stage-1 ILD student carries a classification head (the task registers it) that stage 1 never
trains (cr_ild freezes it), so every shape check passes and it "works" as a teacher or a
classifier while predicting one class for everything. The role tells the loaders what the
weights were trained for:

==================  ==========================================  =================================
role                written by                                  teacher / classifier
==================  ==========================================  =================================
``teacher``         fairseq-train ``--criterion glue_ce``       yes / yes
                    (also a fairseq RoBERTa fine-tuned with
                    ``sentence_prediction``)
``ild_student``     ``--criterion cr_ild`` (stage 1)            refused / refused
``kd_student``      ``--criterion kd`` (stage 2)                yes / yes
``converted_base``  convert_hf_bert.py, a fairseq RoBERTa       only with a converted head
                    without a fine-tuned head                   (HF ``--head-name``)
==================  ==========================================  =================================

Stored as ``task_state["checkpoint_role"]`` (fairseq saves the task's state in every
checkpoint; the trainer does not load it back on resume, so a stage-2 run started with
``--finetune-from-model`` of a stage-1 checkpoint records its own role). A checkpoint written
before roles existed has none: its role is inferred from what fairseq saved anyway (the
criterion in ``cfg.criterion`` / ``args.criterion``, ``extra_state["converted_from"]`` of a
conversion); one that tells nothing is ``unknown`` and passes with the other checks only.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from fairseq_crild.errors import CrildError

ROLE_KEY = "checkpoint_role"
TEACHER, ILD_STUDENT, KD_STUDENT, CONVERTED_BASE, UNKNOWN = (
    "teacher", "ild_student", "kd_student", "converted_base", "unknown")
ROLES = (TEACHER, ILD_STUDENT, KD_STUDENT, CONVERTED_BASE)

# criterion name -> role of the checkpoints a run with it writes
CRITERION_ROLES = {"glue_ce": TEACHER, "sentence_prediction": TEACHER, "cr_ild": ILD_STUDENT,
                   "kd": KD_STUDENT, "masked_lm": CONVERTED_BASE}

DESCRIPTIONS = {
    TEACHER: "a fine-tuned classifier (criterion glue_ce)",
    ILD_STUDENT: "a stage-1 ILD student (criterion cr_ild: its classification head was never "
                 "trained)",
    KD_STUDENT: "a distilled student (criterion kd)",
    CONVERTED_BASE: "a converted pretrained base (convert_hf_bert.py / a RoBERTa conversion)",
    UNKNOWN: "a checkpoint of unknown role",
}


class CheckpointRoleError(CrildError, ValueError):
    """A checkpoint is used for something its training did not prepare it for."""


def role_for_criterion(name: Optional[str]) -> Optional[str]:
    """The role of checkpoints written by a run with criterion ``name`` (None: not ours)."""
    return CRITERION_ROLES.get(str(name or ""))


def _criterion_name(state: Dict[str, Any]) -> Optional[str]:
    cfg = state.get("cfg")
    section = cfg.get("criterion") if hasattr(cfg, "get") else None
    if section is not None:
        name = section.get("_name") if hasattr(section, "get") else getattr(section, "_name",
                                                                              None)
        if name:
            return str(name)
    args = state.get("args")
    name = getattr(args, "criterion", None) if args is not None else None
    return str(name) if name else None


def checkpoint_role(state: Dict[str, Any]) -> str:
    """The recorded role, else the one inferred from the saved criterion or conversion
    marker, else ``unknown``."""
    task_state = state.get("task_state") if isinstance(state, dict) else None
    recorded = task_state.get(ROLE_KEY) if isinstance(task_state, dict) else None
    if recorded in ROLES:
        return str(recorded)
    extra = state.get("extra_state")
    if isinstance(extra, dict) and extra.get("converted_from"):
        return CONVERTED_BASE
    return role_for_criterion(_criterion_name(state)) or UNKNOWN


def check_role(state: Dict[str, Any], path: str, use: str, heads: Dict[str, int],
               head_name: str, override: str) -> str:
    """Refuses a checkpoint whose role does not fit ``use`` (``teacher`` or ``classifier``);
    ``override`` names the option that skips this check. Returns the role."""
    role = checkpoint_role(state)
    if role == ILD_STUDENT:
        raise CheckpointRoleError(
            f"{path} is {DESCRIPTIONS[ILD_STUDENT]}, not usable as a {use}: run stage 2 "
            f"(criterion kd, --finetune-from-model {path}) and use its checkpoint, or pass "
            f"{override} if its head was trained elsewhere")
    if role == CONVERTED_BASE and head_name not in heads:
        raise CheckpointRoleError(
            f"{path} is {DESCRIPTIONS[CONVERTED_BASE]} with no classification head "
            f"{head_name!r} (it has {sorted(heads)}): fine-tune it first (criterion glue_ce), "
            f"or convert a fine-tuned HF classifier with --head-name {head_name}")
    return role
