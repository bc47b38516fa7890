"""GLUE examples as BERT inputs: ``[CLS] a [SEP] b [SEP]`` with token types, built on the fly.

Sentences are stored binarised without special tokens (see prepare_glue.py); pairing and
longest-first truncation happen here so one binarisation serves any ``--max-positions``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils


def longest_first(len_a: int, len_b: int, budget: int) -> Tuple[int, int]:
    """Lengths after BERT's longest-first truncation (one token at a time from the longer
    sequence, from the second on ties) so that ``len_a + len_b <= budget``."""
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    cut = min(abs(len_a - len_b), excess)
    if len_a > len_b:
        len_a -= cut
    else:
        len_b -= cut
    excess -= cut
    return len_a - excess // 2, len_b - (excess - excess // 2)


class SentencePairDataset(FairseqDataset):
    """One GLUE split: token ids of sentence a (and b), optional labels, and an index map.

    ``indices`` selects (and orders) the underlying examples, e.g. a seeded training subset;
    ``labels`` may differ from the stored ones (label-noise experiments).
    """

    def __init__(
        self,
        input0,
        input1,
        labels: Optional[np.ndarray],
        cls: int,
        sep: int,
        pad: int,
        max_positions: int,
        indices: Optional[np.ndarray] = None,
        pad_to_length: Optional[int] = None,
        order_seed: int = 1,
    ):
        super().__init__()
        self.input0, self.input1 = input0, input1
        self.cls, self.sep, self.pad = cls, sep, pad
        self.max_positions = max_positions
        self.pad_to_length = pad_to_length
        self.order_seed = order_seed
        n = len(input0)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = labels
        len_a = np.asarray(input0.sizes, dtype=np.int64)[self.indices]
        specials = 2
        if input1 is not None:
            len_a = len_a + np.asarray(input1.sizes, dtype=np.int64)[self.indices]
            specials = 3
        self.sizes = np.minimum(len_a + specials, max_positions)

    @property
    def is_pair(self) -> bool:
        return self.input1 is not None

    def __len__(self) -> int:
        return len(self.indices)

    def example_id(self, i: int) -> int:
        return int(self.indices[i])

    def __getitem__(self, i: int) -> Dict[str, Any]:
        j = int(self.indices[i])
        a = self.input0[j].long()
        if self.is_pair:
            b = self.input1[j].long()
            la, lb = longest_first(len(a), len(b), self.max_positions - 3)
            a, b = a[:la], b[:lb]
        else:
            b = a.new_empty(0)
            a = a[: self.max_positions - 2]
        cls, sep = a.new_tensor([self.cls]), a.new_tensor([self.sep])
        first = torch.cat([cls, a, sep])
        second = torch.cat([b, sep]) if self.is_pair else b
        item = {
            "id": j,
            "source": torch.cat([first, second]),
            "token_types": torch.cat([first.new_zeros(len(first)), first.new_ones(len(second))]),
        }
        if self.labels is not None:
            item["target"] = self.labels[j]
        return item

    def collater(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        if not samples:
            return {}
        src = data_utils.collate_tokens(
            [s["source"] for s in samples], self.pad, pad_to_length=self.pad_to_length
        )
        net_input = {"src_tokens": src}
        if "token_types" in samples[0]:  # RoBERTa-layout items have none
            net_input["token_type_ids"] = data_utils.collate_tokens(
                [s["token_types"] for s in samples], 0, pad_to_length=self.pad_to_length
            )
        batch = {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": sum(len(s["source"]) for s in samples),
            "net_input": net_input,
        }
        if self.labels is not None:
            target = np.asarray([s["target"] for s in samples])
            batch["target"] = torch.from_numpy(target)
        return batch

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def size(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        """Random order, then a stable sort by length: batches of similar lengths.

        The tie-breaking order is drawn from ``order_seed`` alone, never from the epoch:
        fairseq builds batches once and reuses them across epochs (shuffling their order
        per epoch), but rebuilds them when resuming; an epoch-dependent order would make a
        resumed run see other batches than the uninterrupted one.
        """
        order = np.random.RandomState(self.order_seed).permutation(len(self))
        return order[np.argsort(self.sizes[order], kind="mergesort")]

    @property
    def supports_prefetch(self) -> bool:
        return False
