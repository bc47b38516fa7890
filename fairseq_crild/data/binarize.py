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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import Dictionary, indexed_dataset
from tqdm import tqdm

from fairseq_crild.data.glue_tasks import (
    Example,
    GlueFormatError,
    GlueTask,
    get_task,
    label_ids,
    read_tsv,
    split_path,
)
from fairseq_crild.data.tokenization import (
    build_tokenizer,
    encode_texts,
    read_lowercase_setting,
    set_workers,
)
from fairseq_crild.dictionary import load_bert_dictionary, vocab_fingerprint
from fairseq_crild.outputs import atomic_output_dir, check_output_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHUNK = 8192  # examples per encode_batch call (progress granularity)
INDEX_FILE = os.path.join("index", "{split}.txt")


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


def _encode(tokenizer, texts: List[str], desc: str) -> Iterator[List[int]]:
    """Ids chunk by chunk (bounded memory on MNLI/QQP), with a progress bar on a terminal."""
    with tqdm(total=len(texts), desc=desc, unit="ex", leave=False, disable=None) as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            yield from encode_texts(tokenizer, chunk)
            bar.update(len(chunk))


def _read_all(glue_dir: str, task: GlueTask) -> Tuple[Dict[str, Tuple[str, List[Example]]],
                                                      List[str]]:
    """Reads every split first, so that a malformed file fails before anything is written."""
    found, missing = {}, []
    for split in task.splits:
        path = split_path(glue_dir, task, split)
        if not os.path.isfile(path) and split in task.optional_splits:
            logger.warning(f"{path} not found: {task.name} split {split!r} skipped")
            missing.append(split)
            continue
        found[split] = (path, read_tsv(path, task, split))
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
        return load_bert_dictionary(dict_path)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{dict_path}: not a fairseq dict.txt ({err})") from None


def _tool_version() -> str:
    import fairseq_crild

    return getattr(fairseq_crild, "__version__", "unknown")


def prepare_task(glue_dir: str, task: str, dict_path: str, out_dir: str,
                 lowercase: Optional[bool] = None, overwrite: bool = False,
                 workers: Optional[int] = None) -> Dict[str, Any]:
    """Reads, tokenises and binarises every split of a GLUE task into ``out_dir``.

    ``lowercase=None`` follows the tokenizer_config.json next to ``dict_path`` (written by
    convert_hf_bert.py), else lower-cases (uncased BERT). ``workers`` caps the tokenizer's
    threads (:func:`~fairseq_crild.data.tokenization.set_workers`). The folder is built in a
    temporary sibling and appears only when complete; an existing non-empty one is refused
    (:class:`~fairseq_crild.outputs.OutputExistsError`) unless ``overwrite``, and then it is
    replaced only after the new one is complete. Returns the meta.json contents.
    """
    spec = get_task(task)
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
    splits, missing = _read_all(glue_dir, spec)
    is_pair = _is_pair(spec, splits)

    meta: Dict[str, Any] = {
        "format_version": FORMAT_VERSION, "tool": "fairseq-crild prepare_glue",
        "tool_version": _tool_version(), "task": spec.name,
        "label_names": list(spec.label_names), "regression": spec.regression,
        "num_classes": spec.num_classes, "metrics": list(spec.metrics),
        "main_metric": spec.main_metric, "is_pair": is_pair, "lowercase": lowercase,
        "splits": {}, "labelled_splits": [], "missing_splits": missing, "sources": {},
        "dict_sha256": sha256_file(dict_path), "vocab_sha256": vocab_fingerprint(dictionary),
        "vocab_size": len(dictionary), "index_file": INDEX_FILE,
        "label_dtype": "float64" if spec.regression else "int64",
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
                                    _encode(tokenizer, column, f"{name} {kind}"), len(dictionary))
            if spec.has_labels(split):
                _write_labels(os.path.join(tmp, "label"), split, spec, examples)
                meta["labelled_splits"].append(split)
            with open(os.path.join(tmp, INDEX_FILE.format(split=split)), "w",
                      encoding="utf-8") as f:
                f.writelines(e.index + "\n" for e in examples)
            meta["splits"][split] = len(examples)
            meta["sources"][split] = {"file": os.path.abspath(path), "sha256": sha256_file(path)}
            logger.info(f"{name}: {len(examples)} examples from {path}")
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
    return meta


def _write_labels(folder: str, split: str, spec: GlueTask, examples: List[Example]) -> None:
    os.makedirs(folder, exist_ok=True)
    dtype = np.float64 if spec.regression else np.int64
    values = np.asarray(label_ids(spec, examples), dtype=dtype)
    write_label_dataset(os.path.join(folder, split), values)
    if spec.regression:  # what distill_glue reads (see the module docstring)
        with open(os.path.join(folder, split + ".label"), "w", encoding="utf-8") as f:
            f.writelines(f"{v!r}\n" for v in values.tolist())
