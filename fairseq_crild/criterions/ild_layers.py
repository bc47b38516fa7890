"""Which student layer is compared with which teacher layer, and the head counts the chosen
objects need.

Resolved once the models are known (``CrIldCriterion.prepare_student``): a last / uniform /
explicit map pairs layers one to one (TinyBERT's uniform map with hidden states also pairs
the embedding outputs); BERT-EMD's ``emd`` map compares every student layer with every
teacher layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from fairseq_crild.distill import losses


@dataclass(frozen=True)
class LayerPlan:
    """The resolved layer map (empty until the models are known)."""

    #: (student, teacher) 0-based transformer layers compared
    layer_map: List[Tuple[int, int]] = field(default_factory=list)
    #: layers whose features are requested: pairwise aligned with layer_map, except for
    #: BERT-EMD (every_pair), which compares every student layer with every teacher layer
    student_layers: List[int] = field(default_factory=list)
    teacher_layers: List[int] = field(default_factory=list)
    #: TinyBERT's uniform map: the embedding outputs are matched too, h_0 <- h_0
    embedding_pair: bool = False
    #: (student, teacher) indices into the hidden-state lists (0 = embedding output) of
    #: the hidden-MSE pairs
    hidden_pairs: List[Tuple[int, int]] = field(default_factory=list)
    every_pair: bool = False  # BERT-EMD: weighted by the EMD flow


def is_emd_map(spec: str) -> bool:
    """``--ild-layer-map emd``: BERT-EMD's many-to-many map."""
    return spec.strip().lower() == "emd"


def resolve_layer_plan(spec: str, objects: Sequence[str], n_student: int, n_teacher: int,
                       uniform_embedding_pair: bool) -> LayerPlan:
    """The layer map of ``spec`` (--ild-layer-map) between an ``n_student``-layer student
    and an ``n_teacher``-layer teacher; errors name the spec."""
    if is_emd_map(spec):
        student_layers = list(range(n_student))
        teacher_layers = list(range(n_teacher))
        layer_map = [(s, t) for s in student_layers for t in teacher_layers]
        embedding_pair, every_pair = False, True
    else:
        layer_map = losses.parse_layer_map(spec, n_student, n_teacher)
        student_layers = [s for s, _ in layer_map]
        teacher_layers = [t for _, t in layer_map]
        embedding_pair = ("hidden" in objects and spec.strip().lower() == "uniform"
                          and uniform_embedding_pair)
        every_pair = False
    hidden_pairs: List[Tuple[int, int]] = []
    if "hidden" in objects:
        hidden_pairs = losses.hidden_state_pairs(
            [(s, t) for s, t in layer_map if not every_pair], embedding_pair)
    return LayerPlan(layer_map=layer_map, student_layers=student_layers,
                     teacher_layers=teacher_layers, embedding_pair=embedding_pair,
                     hidden_pairs=hidden_pairs, every_pair=every_pair)


def check_attention_heads(objects: Sequence[str], student_heads: int,
                          teacher_heads: int) -> None:
    """The attention KL compares head by head: the counts must match."""
    if "attention" in objects and student_heads != teacher_heads:
        raise ValueError(f"attention KL needs equal head counts (student {student_heads}, "
                         f"teacher {teacher_heads}); use --ild-objects qkv instead")


def relation_heads(objects: Sequence[str], num_relation_heads: int, teacher_heads: int,
                   student_width: int, teacher_width: int) -> int:
    """The relation heads R of the Q/K/V relation loss (--num-relation-heads, 0: the
    teacher's attention heads); R must divide both widths. Without qkv the option is
    returned as given (no loss uses it)."""
    if "qkv" not in objects:
        return num_relation_heads
    heads = num_relation_heads or teacher_heads
    for who, width in (("student", student_width), ("teacher", teacher_width)):
        if width % heads:
            raise ValueError(f"--num-relation-heads {heads} does not divide "
                             f"the {who} width {width}")
    return heads
