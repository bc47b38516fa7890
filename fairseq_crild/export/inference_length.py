"""How long an input may be at inference: as long as the checkpoint's training allowed.

Training and dev evaluation truncate every pair longest-first to the task's
``--max-positions`` (128 in the paper's recipe), a length fairseq saves in the checkpoint's
task config. Inference that truncated at the position table instead (512 for BERT-base)
would feed longer pairs than the model was trained and selected on, and its predictions would
differ from the dev evaluation's (on RTE dev, 33 of 277 pairs are longer than 128 word
pieces). The hub, classify.py, predict_glue.py and the exports therefore default to the
training length; ``max_positions`` / ``--max-positions`` changes it.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

#: the shortest input that still holds a token of each sentence: [CLS] a [SEP] b [SEP]
MIN_POSITIONS = 5


def trained_max_positions(state: Dict[str, Any]) -> Optional[int]:
    """The task's ``max_positions`` saved with the checkpoint (hydra ``cfg.task`` or legacy
    ``args``), or None when it names none (a conversion, a checkpoint of another tool)."""
    from fairseq_crild.models import roberta_conversion as rc

    try:
        value = rc.task_config_dict(state).get("max_positions")
    except Exception:  # noqa: BLE001  (a config fairseq could not read back: tell nothing)
        return None
    if isinstance(value, bool):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):  # an unresolved interpolation such as ${model.x}
        return None
    return value if value > 0 else None


def inference_max_positions(state: Dict[str, Any], table: int, requested: Optional[int] = None,
                            path: str = "checkpoint", option: str = "--max-positions") -> int:
    """The truncation length for inference with the checkpoint ``state``.

    ``requested`` (None: the default) wins when given; it must lie in [5, ``table``] (the
    model's position table), else the error names ``option``. By default: the training
    ``--max-positions`` saved in the checkpoint, else (nothing saved) the position table.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int):
            raise ValueError(f"{option} {requested!r}: give a whole number of tokens (e.g. 128)")
        if requested < MIN_POSITIONS:
            raise ValueError(f"{option} {requested}: a pair needs at least {MIN_POSITIONS} "
                             "tokens ([CLS] a [SEP] b [SEP]); give e.g. 128")
        if requested > table:
            raise ValueError(f"{option} {requested} exceeds the position table of {path} "
                             f"({table} positions); give at most {table}")
        return requested
    trained = trained_max_positions(state)
    if trained is None:
        logger.info(f"{path} records no training --max-positions: inputs are truncated at its "
                    f"position table ({table}); pass {option} to change it")
        return table
    return min(trained, table)
