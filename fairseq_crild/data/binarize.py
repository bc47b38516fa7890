"""Binarising GLUE tasks with fairseq's indexed datasets (the folder ``distill_glue`` reads).

Output layout (fairseq RoBERTa-GLUE-like)::

    input0/dict.txt, input0/{split}.bin|.idx  sentence a, WordPiece ids (no [CLS]/[SEP])
    input1/dict.txt, input1/{split}.bin|.idx  sentence b (pair tasks only)
    label/{split}.bin|.idx                    one element per example: int64 class index
                                              (position in label_names), or float64 score
                                              (STS-B); no file for test splits
    label/{split}.label                       STS-B only: the scores as text, one per line
                                              (fairseq's MMapIndexedDataset returns every
                                              element cast to int64, so the float64 .bin
                                              must be read with :func:`load_labels`)
    index/{split}.txt                         the examples' ids, one per line (GLUE
                                              test-server files need them)
    meta.json                                 task, labels, metrics, sizes, checksums

Splits are ``train``, ``valid``, ``test`` (MNLI also ``valid_mm``/``test_mm``; AX only
``test``; PAIRS ``train`` [+ ``valid``], unlabelled). A missing test file (PAIRS: dev file) is
skipped with a warning and listed in meta ``missing_splits``.

Guards: an output folder that is, holds or lies inside the GLUE folder or the
dictionary is refused before anything is read; a dictionary that is not a text dict.txt is
refused in one line; so is one that leaves more than ``max_unk_rate`` (default
:data:`MAX_UNK_RATE`) of the data's word pieces unknown (an empty, truncated or other model's
vocabulary would otherwise turn the data into [UNK]s): checked on the first sentences before
anything is written, then on all of them before the folder appears. meta.json records the
rate (``unk_rate``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import Dictionary, indexed_dataset
from tqdm import tqdm

from fairseq_crild.data.dictionary import BERT_SPECIALS, load_bert_dictionary, vocab_fingerprint
from fairseq_crild.data.glue_tasks import (
    EXTRA_COLUMNS,
    Example,
    GlueFormatError,
    GlueTask,
    get_task,
    label_ids,
    read_tsv,
    split_path,
)
from fairseq_crild.data.meta import GlueMeta, write_meta
from fairseq_crild.data.tokenization import (
    build_tokenizer,
    encode_texts,
    read_lowercase_setting,
    read_tokenizer_config,
    set_workers,
)
from fairseq_crild.errors import CrildError
from fairseq_crild.outputs import atomic_output_dir, check_not_an_input, check_output_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHUNK = 8192  # examples per encode_batch call (progress granularity)
INDEX_FILE = os.path.join("index", "{split}.txt")
# the largest share of [UNK] word pieces accepted by default: a matching BERT vocabulary
# leaves almost none unknown (all-MiniLM-L6-v2's uncased WordPiece: 0 of the 727k pieces of
# the real RTE, CoLA, STS-B and WNLI, measured); an empty, truncated or other model's one
# leaves far more
MAX_UNK_RATE = 0.05
UNK_SAMPLE = 2000  # sentences checked before anything is written


class UnknownTokenError(CrildError, ValueError):
    """The dictionary leaves too many of the data's word pieces unknown."""


class _UnkCount:
    """[UNK] and total word pieces per (split, column), counted while encoding."""

    def __init__(self, unk: int) -> None:
        self.unk_id = unk
        self.counts: Dict[Tuple[str, str], List[int]] = {}

    def add(self, key: Tuple[str, str], ids: Sequence[int]) -> None:
        c = self.counts.setdefault(key, [0, 0])
        c[0] += sum(1 for i in ids if i == self.unk_id)
        c[1] += len(ids)

    def rate(self) -> float:
        unk = sum(c[0] for c in self.counts.values())
        total = sum(c[1] for c in self.counts.values())
        return unk / total if total else 0.0

    def check(self, dict_path: str, max_rate: float, scope: str) -> None:
        rate = self.rate()
        if rate <= max_rate:
            return
        unk = sum(c[0] for c in self.counts.values())
        total = sum(c[1] for c in self.counts.values())
        (split, kind), worst = max(self.counts.items(),
                                   key=lambda kv: kv[1][0] / max(kv[1][1], 1))
        raise UnknownTokenError(
            f"--dict {dict_path}: {rate:.1%} of the word pieces of {scope} are [UNK] ({unk} of "
            f"{total}; worst {split} {kind}: {worst[0] / max(worst[1], 1):.1%}), above "
            f"--max-unk-rate {max_rate:g}: the dictionary does not fit the data (empty, "
            "truncated, or another model's? cased text with an uncased vocabulary?); pass the "
            "dict.txt of the model you will train, or --max-unk-rate 1 to accept")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_token_dataset(path: str, ids: Iterable[Sequence[int]], vocab_size: int) -> None:
    """``path``.bin/.idx with one item per sentence (fairseq's smallest fitting int dtype).
    ``ids`` may be a generator: nothing but the current item is held in memory."""
    builder = indexed_dataset.make_builder(path + ".bin", impl="mmap", vocab_size=vocab_size)
    for seq in ids:
        builder.add_item(torch.from_numpy(np.asarray(seq, dtype=np.int64)))
    builder.finalize(path + ".idx")


def write_label_dataset(path: str, values: np.ndarray) -> None:
    """``path``.bin/.idx with one int64 or float64 element per example."""
    dtype = np.float64 if values.dtype.kind == "f" else np.int64
    builder = indexed_dataset.MMapIndexedDatasetBuilder(path + ".bin", dtype=dtype)
    for v in np.asarray(values, dtype=dtype):
        builder.add_item(torch.from_numpy(np.asarray([v], dtype=dtype)))
    builder.finalize(path + ".idx")


def load_labels(data_dir: str, split: str) -> Optional[np.ndarray]:
    """The labels of ``split`` exactly as written (int64 classes / float64 scores), or None
    for an unlabelled split. Bypasses MMapIndexedDataset.__getitem__, which casts to int64."""
    path = os.path.join(data_dir, "label", split)
    if not indexed_dataset.MMapIndexedDataset.exists(path):
        return None
    index = indexed_dataset.MMapIndexedDataset.Index(path + ".idx")
    if len(index) and not np.all(index.sizes == 1):
        raise ValueError(f"{path}.idx: expected one label per example")
    return np.fromfile(path + ".bin", dtype=index.dtype, count=len(index))


def read_index(data_dir: str, split: str) -> List[str]:
    """The example ids of ``split`` (for GLUE test-server prediction files)."""
    with open(os.path.join(data_dir, INDEX_FILE.format(split=split)), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _encode(tokenizer, texts: List[str], desc: str, counter: Optional[_UnkCount] = None,
            key: Tuple[str, str] = ("", "")) -> Iterator[List[int]]:
    """Ids chunk by chunk (bounded memory on MNLI/QQP), with a progress bar on a terminal;
    ``counter`` counts their [UNK]s."""
    with tqdm(total=len(texts), desc=desc, unit="ex", leave=False, disable=None) as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            for ids in encode_texts(tokenizer, chunk):
                if counter is not None:
                    counter.add(key, ids)
                yield ids
            bar.update(len(chunk))


def _read_all(glue_dir: str, task: GlueTask, extra_columns: str = "refuse"
              ) -> Tuple[Dict[str, Tuple[str, List[Example]]], List[str]]:
    """Reads every split first, so that a malformed file fails before anything is written."""
    found, missing = {}, []
    for split in task.splits:
        path = split_path(glue_dir, task, split)
        if not os.path.isfile(path) and split in task.optional_splits:
            logger.warning(f"{path} not found: {task.name} split {split!r} skipped")
            missing.append(split)
            continue
        found[split] = (path, read_tsv(path, task, split, extra_columns))
    return found, missing


def _is_pair(spec: GlueTask, splits: Dict[str, Tuple[str, List[Example]]]) -> bool:
    """Whether sentence b exists: fixed per GLUE task; for PAIRS, the header decides and
    must decide alike for every file."""
    with_b = {path: examples[0].text_b is not None for path, examples in splits.values()}
    if len(set(with_b.values())) > 1:
        single = next(p for p, b in with_b.items() if not b)
        pair = next(p for p, b in with_b.items() if b)
        raise GlueFormatError(f"{single}:1: no sentence b column, but {pair} has one")
    return spec.is_pair and all(with_b.values())


def _load_dictionary(dict_path: str) -> Dictionary:
    if not os.path.isfile(dict_path):
        raise FileNotFoundError(f"{dict_path}: dictionary not found (pass the dict.txt written "
                                "by convert_hf_bert.py)")
    try:
        dictionary = load_bert_dictionary(dict_path)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"--dict {err}") from None
    if len(dictionary) <= len(BERT_SPECIALS):
        raise UnknownTokenError(
            f"--dict {dict_path}: no symbols besides {', '.join(BERT_SPECIALS)} (empty file?): "
            "every word piece would be [UNK]; pass the dict.txt written by convert_hf_bert.py")
    written = read_tokenizer_config(dict_path)
    want = written.get("crild_vocab_sha256")
    if want is not None and want != vocab_fingerprint(dictionary):
        raise ValueError(
            f"--dict {dict_path}: {len(dictionary)} symbols, not the vocabulary that "
            "convert_hf_bert.py wrote next to it (tokenizer_config.json: "
            f"{written.get('crild_vocab_size', '?')} symbols, another fingerprint): truncated "
            "or edited? convert the model again, or move the file away from that "
            "tokenizer_config.json if the change is deliberate")
    return dictionary


def _check_sample(tokenizer, dictionary: Dictionary, splits: Dict[str, Tuple[str, List[Example]]],
                  dict_path: str, max_rate: float) -> None:
    """The [UNK] rate of the first sentences of the first split, before anything is written
    (a mismatched dictionary fails in seconds, not after tokenising MNLI)."""
    if max_rate >= 1 or not splits:
        return
    split, (_, examples) = next(iter(splits.items()))
    sample = _UnkCount(dictionary.unk())
    head = examples[:UNK_SAMPLE]
    for kind, column in (("input0", [e.text_a for e in head]),
                         ("input1", [e.text_b for e in head if e.text_b is not None])):
        for ids in encode_texts(tokenizer, column):
            sample.add((split, kind), ids)
    sample.check(dict_path, max_rate, f"the first {len(head)} examples of {split}")


def _tool_version() -> str:
    import fairseq_crild

    return getattr(fairseq_crild, "__version__", "unknown")


def prepare_task(glue_dir: str, task: str, dict_path: str, out_dir: str,
                 lowercase: Optional[bool] = None, overwrite: bool = False,
                 workers: Optional[int] = None, max_unk_rate: float = MAX_UNK_RATE,
                 extra_columns: str = "refuse") -> Dict[str, Any]:
    """Reads, tokenises and binarises every split of a GLUE task into ``out_dir``.

    ``lowercase=None`` follows the tokenizer_config.json next to ``dict_path`` (written by
    convert_hf_bert.py), else lower-cases (uncased BERT). ``workers`` caps the tokenizer's
    threads (:func:`~fairseq_crild.data.tokenization.set_workers`). The folder is built in a
    temporary sibling and appears only when complete; an existing non-empty one is refused
    (:class:`~fairseq_crild.outputs.OutputExistsError`) unless ``overwrite``, and then it is
    replaced only after the new one is complete; an ``out_dir`` that is, holds or lies inside
    ``glue_dir`` or the dictionary is refused. ``max_unk_rate``: the largest share of [UNK]
    word pieces accepted (:class:`UnknownTokenError` above it; 1 accepts any).
    ``extra_columns``: see :func:`~fairseq_crild.data.glue_tasks.read_tsv`. Returns the
    meta.json contents (the JSON object; :func:`~fairseq_crild.data.meta.read_meta_file` reads
    it back typed).
    """
    spec = get_task(task)
    if not 0 <= max_unk_rate <= 1:
        raise ValueError(f"--max-unk-rate must lie in [0, 1], got {max_unk_rate:g}")
    if extra_columns not in EXTRA_COLUMNS:
        raise ValueError(f"--extra-columns must be one of {', '.join(EXTRA_COLUMNS)}, "
                         f"got {extra_columns!r}")
    check_not_an_input(out_dir, {"--glue-dir": glue_dir, "--dict": dict_path})
    check_output_dir(out_dir, overwrite)  # fail fast, before reading anything
    if not os.path.isdir(glue_dir):
        raise GlueFormatError(f"{glue_dir}: GLUE folder not found")
    dictionary = _load_dictionary(dict_path)
    configured = read_lowercase_setting(dict_path)
    if lowercase is None:
        lowercase = True if configured is None else configured
    elif configured is not None and configured != lowercase:
        logger.warning(f"lowercase={lowercase} but the tokenizer_config.json next to "
                       f"{dict_path} says do_lower_case={configured}")
    set_workers(workers)
    tokenizer = build_tokenizer(dictionary, lowercase)
    splits, missing = _read_all(glue_dir, spec, extra_columns)
    is_pair = _is_pair(spec, splits)
    _check_sample(tokenizer, dictionary, splits, dict_path, max_unk_rate)
    unk = _UnkCount(dictionary.unk())

    meta: Dict[str, Any] = {
        "format_version": FORMAT_VERSION, "tool": "fairseq-crild prepare_glue",
        "tool_version": _tool_version(), "task": spec.name,
        "label_names": list(spec.label_names), "regression": spec.regression,
        "num_classes": spec.num_classes, "metrics": list(spec.metrics),
        "main_metric": spec.main_metric, "is_pair": is_pair, "lowercase": lowercase,
        "splits": {}, "labelled_splits": [], "missing_splits": missing, "sources": {},
        "dict_sha256": sha256_file(dict_path), "vocab_sha256": vocab_fingerprint(dictionary),
        "vocab_size": len(dictionary), "index_file": INDEX_FILE,
        "label_dtype": "float64" if spec.regression else "int64", "unk_rate": None,
    }
    kinds = ["input0", "input1"] if is_pair else ["input0"]
    with atomic_output_dir(out_dir, overwrite) as tmp:
        for kind in kinds + ["index"]:
            os.makedirs(os.path.join(tmp, kind))
        for kind in kinds:
            shutil.copyfile(dict_path, os.path.join(tmp, kind, "dict.txt"))
        for split, (path, examples) in splits.items():
            name = f"{spec.name} {split}"
            texts = [[e.text_a for e in examples]]
            if is_pair:
                texts.append([e.text_b or "" for e in examples])
            for kind, column in zip(kinds, texts):
                write_token_dataset(os.path.join(tmp, kind, split),
                                    _encode(tokenizer, column, f"{name} {kind}", unk,
                                            (split, kind)), len(dictionary))
            if spec.has_labels(split):
                _write_labels(os.path.join(tmp, "label"), split, spec, examples)
                meta["labelled_splits"].append(split)
            with open(os.path.join(tmp, INDEX_FILE.format(split=split)), "w",
                      encoding="utf-8") as f:
                f.writelines(e.index + "\n" for e in examples)
            meta["splits"][split] = len(examples)
            meta["sources"][split] = {"file": os.path.abspath(path), "sha256": sha256_file(path)}
            logger.info(f"{name}: {len(examples)} examples from {path}")
        unk.check(dict_path, max_unk_rate, "the data")
        meta["unk_rate"] = unk.rate()
        logger.info(f"[UNK]: {meta['unk_rate']:.3%} of the word pieces")
        write_meta(tmp, GlueMeta.from_json(meta))
    return meta


def _write_labels(folder: str, split: str, spec: GlueTask, examples: List[Example]) -> None:
    os.makedirs(folder, exist_ok=True)
    dtype = np.float64 if spec.regression else np.int64
    values = np.asarray(label_ids(spec, examples), dtype=dtype)
    write_label_dataset(os.path.join(folder, split), values)
    if spec.regression:  # what distill_glue reads (see the module docstring)
        with open(os.path.join(folder, split + ".label"), "w", encoding="utf-8") as f:
            f.writelines(f"{v!r}\n" for v in values.tolist())
