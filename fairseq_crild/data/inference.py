"""The one loop that runs a classifier over a dataset: batch examples, run the model, collect
its logits.

The hub, ``crild-predict``, the pipeline's report, the teacher-logit cache and the exports'
check batches all batch a fairseq-style dataset (``__getitem__`` + ``collater``) the same way,
so that a prediction does not depend on which of them made it: the same examples in the same
batches give bit-identical logits. Only torch is imported here: it sits with the datasets it
batches, below every layer that runs a model over them (the cache, exports, hub, report).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

#: ``net_input`` (a collated batch's model inputs) -> (B, C) logits
Forward = Callable[[Dict[str, Tensor]], Tensor]


def batched(dataset: Any, batch_size: Union[int, Sequence[int]],
            order: Optional[Sequence[int]] = None) -> Iterator[Dict[str, Any]]:
    """Collated batches of ``dataset[i]`` for ``i`` in ``order`` (default: every example in
    index order), consecutive and of ``batch_size`` examples (the last one shorter); a
    sequence of sizes is cycled through (batches of varying size, as the exports check)."""
    if order is None:
        order = range(len(dataset))
    sizes = itertools.cycle([batch_size] if isinstance(batch_size, int) else batch_size)
    start = 0
    while start < len(order):
        size = next(sizes)
        if size < 1:
            raise ValueError(f"batch size {size}: give a positive number of examples")
        chunk = order[start:start + size]
        yield dataset.collater([dataset[int(i)] for i in chunk])
        start += size


def predict_logits(forward: Forward, dataset: Any, batch_size: int,
                   order: Optional[Sequence[int]] = None,
                   device: Optional[torch.device] = None) -> Tensor:
    """(len(order), C) float32 logits on the CPU, row k for ``dataset[order[k]]``; ``order``
    as in :func:`batched`. ``net_input`` is moved to ``device`` first when one is given.
    Without examples: a (0, 0) tensor."""
    out = []
    with torch.no_grad():
        for batch in batched(dataset, batch_size, order):
            net_input = batch["net_input"]
            if device is not None:
                net_input = {k: v.to(device) for k, v in net_input.items()}
            out.append(forward(net_input).detach().float().cpu())
    return torch.cat(out) if out else torch.empty((0, 0))


def head_forward(model: torch.nn.Module, head: str) -> Forward:
    """The :data:`Forward` of a ``bert`` / ``crild_roberta`` model's classification head."""

    def forward(net_input: Dict[str, Tensor]) -> Tensor:
        return model(**net_input, classification_head_name=head)[0]

    return forward
