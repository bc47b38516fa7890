"""Initialising a student from a larger model's weights ("PKD initialisation").

The student's embeddings, pooler and each of its layers are copied from chosen layers of a
pretrained (not fine-tuned) checkpoint of the same width; the paper copies layers 0..N-1.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
from torch import Tensor

from fairseq_crild.models.bert import BertModel

logger = logging.getLogger(__name__)


def select_source_layers(spec: str, n_student: int, n_source: int) -> List[int]:
    """``first`` -> 0..N-1; ``uniform`` -> (i+1)*k-1 (k = source/student); or ``0,2,4``."""
    spec = spec.strip().lower()
    if spec == "first":
        layers = list(range(n_student))
    elif spec == "uniform":
        if n_source % n_student:
            raise ValueError(f"--init-student-layers uniform: {n_source} source layers are not "
                             f"a multiple of {n_student} student layers; list them explicitly")
        k = n_source // n_student
        layers = [(i + 1) * k - 1 for i in range(n_student)]
    else:
        try:
            layers = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--init-student-layers {spec!r}: expected 'first', 'uniform' or "
                             "a comma-separated list of layer indices") from None
    if len(layers) != n_student:
        raise ValueError(f"--init-student-layers {spec!r}: {len(layers)} layers listed, the "
                         f"student has {n_student}")
    bad = [i for i in layers if not 0 <= i < n_source]
    if bad:
        raise ValueError(f"--init-student-layers {spec!r}: layers {bad} do not exist in the "
                         f"source model ({n_source} layers, 0-based)")
    return layers


def copy_layers_into(student: BertModel, source: Dict[str, Tensor], layers: List[int]) -> None:
    """Copies embeddings, pooler and ``layers`` of ``source`` (a state dict) into the student."""
    own = student.state_dict()
    updates: Dict[str, Tensor] = {}
    for key in own:
        if key.startswith("layers."):
            i, rest = key[len("layers."):].split(".", 1)
            src_key = f"layers.{layers[int(i)]}.{rest}"
        elif key.startswith(("embeddings.", "pooler.")):
            src_key = key
        else:
            continue  # task heads stay freshly initialised
        if src_key not in source:
            if key.startswith("pooler."):
                continue
            raise ValueError(f"--init-student-from: the source has no {src_key!r}")
        if source[src_key].shape != own[key].shape:
            raise ValueError(
                f"--init-student-from: {src_key} has shape {tuple(source[src_key].shape)}, the "
                f"student's {key} has {tuple(own[key].shape)}; a student of another width must "
                "start random (omit --init-student-from)"
            )
        updates[key] = source[src_key]
    with torch.no_grad():
        for key, value in updates.items():
            own[key].copy_(value)
    logger.info(f"student initialised from source layers {layers}")
