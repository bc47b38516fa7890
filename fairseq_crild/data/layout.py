"""The input layout of a prepared folder, decided once: BERT's or RoBERTa's.

A folder written by ``scripts/prepare_glue.py`` (BERT: WordPiece ``dict.txt``,
``[CLS] a [SEP] b [SEP]`` with token types, labels in ``label/``) or by
``scripts/prepare_glue_roberta.py`` (meta.json ``input_format: roberta``: fairseq's
``dict.txt`` plus ``<mask>``, ``<s> a </s> </s> b </s>`` without token types, labels through
``label/dict.txt``). A :class:`DataLayout` holds everything that differs between the two
(dictionary, dataset class, labels); the task, the ILD data, the teacher-logit cache and
export ask it rather than testing the format themselves, so every reader of a folder builds
the same items. :func:`load_column` is the one memory-mapped reader of a binarised column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Type

import numpy as np
from fairseq.data import Dictionary, data_utils

from fairseq_crild.data.binarize import load_labels
from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.data.meta import GlueMeta
from fairseq_crild.data.pair_dataset import SentencePairDataset
from fairseq_crild.data.roberta_data import (
    RobertaPairDataset,
    is_roberta_data,
    load_roberta_dictionary,
    load_roberta_labels,
)


@dataclass(frozen=True)
class DataLayout:
    """How one input format reads a prepared folder."""

    name: str  # ``bert`` or ``roberta`` (a model's ``input_format``)
    dataset_class: Type[SentencePairDataset]
    _dictionary: Callable[[str], Dictionary]
    _labels: Callable[[str, str, bool, Sequence[str]], Optional[np.ndarray]]

    def load_dictionary(self, dict_path: str) -> Dictionary:
        """A ``dict.txt`` as models of this layout index it."""
        return self._dictionary(dict_path)

    def load_labels(self, data_dir: str, split: str, regression: bool,
                    label_names: Sequence[str]) -> Optional[np.ndarray]:
        """The split's labels (float32 scores or int64 classes), or None if unlabelled."""
        labels = self._labels(data_dir, split, regression, label_names)
        if labels is None:
            return None
        return labels.astype(np.float32 if regression else np.int64)

    def pair_dataset(self, dictionary: Dictionary, input0, input1,
                     labels: Optional[np.ndarray], max_positions: int,
                     **kwargs: Any) -> SentencePairDataset:
        """The model inputs of binarised columns (pairing, special tokens, truncation to
        ``max_positions``); ``kwargs``: ``indices``, ``pad_to_length``, ``order_seed``."""
        return self.dataset_class(input0, input1, labels, cls=dictionary.bos(),
                                  sep=dictionary.eos(), pad=dictionary.pad(),
                                  max_positions=max_positions, **kwargs)


def _bert_labels(data_dir: str, split: str, regression: bool,
                 label_names: Sequence[str]) -> Optional[np.ndarray]:
    return load_labels(data_dir, split)


BERT = DataLayout("bert", SentencePairDataset, load_bert_dictionary, _bert_labels)
ROBERTA = DataLayout("roberta", RobertaPairDataset, load_roberta_dictionary, load_roberta_labels)
LAYOUTS: Dict[str, DataLayout] = {layout.name: layout for layout in (BERT, ROBERTA)}


def layout_of(meta: GlueMeta) -> DataLayout:
    """The layout a folder's meta.json records (folders without ``input_format``: BERT)."""
    return ROBERTA if is_roberta_data(meta) else BERT


def layout_named(name: str) -> DataLayout:
    """The layout of a model's ``input_format``."""
    if name not in LAYOUTS:
        raise ValueError(f"input format {name!r}: expected one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def dict_path(data_dir: str) -> str:
    """The folder's input dictionary (shared by input0 and input1)."""
    return os.path.join(data_dir, "input0", "dict.txt")


def load_column(data_dir: str, kind: str, split: str):
    """The memory-mapped binarised ``kind`` column (input0, input1) of ``split``, or None
    when the folder has none."""
    path = os.path.join(data_dir, kind, split)
    if not os.path.isfile(path + ".bin"):
        return None
    return data_utils.load_indexed_dataset(path, None, dataset_impl="mmap")
