"""The glue between ``cr_ild`` and BERT-EMD (:mod:`fairseq_crild.distill.emd`): which weight update
and attention cost the options chose, and the M x N cost matrices of the distilled features.

The transport, the layer weights and their updates live in :mod:`fairseq_crild.distill.emd`; this
module only maps the criterion's features and distance onto it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from torch import Tensor

from fairseq_crild.criterions.ild_distance import IldDistance
from fairseq_crild.distill.emd import (
    EmdLayerWeights,
    cost_matrix,
    pairwise_attention_kl,
    pairwise_attention_mse,
)


def build_layer_weights(n_student: int, n_teacher: int, objects: Sequence[str], variant: str,
                        temperature: float, extra_softmax: bool) -> EmdLayerWeights:
    """The EMD layer weights of --emd-variant (saved with the criterion as ``emd.*``)."""
    return EmdLayerWeights(n_student, n_teacher, objects, variant=variant,
                           temperature=temperature, extra_softmax=extra_softmax)


def attention_cost(choice: str, variant: str) -> str:
    """--emd-attention-cost: "variant" is mse for the release, kl for bert_emd."""
    if choice == "variant":
        return "mse" if variant == "release" else "kl"
    return choice


def cost_matrices(objects: Sequence[str], s_feats: Dict[str, Any], t_feats: Dict[str, Any],
                  n_student: int, n_teacher: int, mask: Tensor, distance: IldDistance,
                  projection: Optional[Callable[[Tensor], Tensor]],
                  attention: str) -> Dict[str, Tensor]:
    """Per object, the M x N matrix of per-layer distances between every student and teacher
    layer (``attention``: the resolved attention cost, mse or kl)."""
    costs: Dict[str, Tensor] = {}
    for obj in objects:
        s_list = [s_feats[f"{obj}.{i}"] for i in range(n_student)]
        t_list = [t_feats[f"{obj}.{j}"] for j in range(n_teacher)]
        if obj == "attention" and attention == "mse":
            # padding included (pad-to-128 batches): the mean over all B x H x L x L
            every = distance.pad_mode == "include"
            costs[obj] = pairwise_attention_mse(s_list, t_list, None if every else mask)
            continue
        if obj == "attention":  # each layer's softmax once, not once per pair
            costs[obj] = pairwise_attention_kl(s_list, t_list, mask, kl=distance.attention_kl)
            continue
        if obj in ("hidden", "cls") and projection is not None:  # once per layer
            s_list = [projection(x) for x in s_list]
        costs[obj] = cost_matrix(
            lambda i, j, obj=obj, s=s_list, t=t_list: distance(obj, s[i], t[j], mask), n_student,
            n_teacher)
    return costs
