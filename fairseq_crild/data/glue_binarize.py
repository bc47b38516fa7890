"""Binarising GLUE splits with fairseq's indexed datasets (what ``distill_glue`` reads).

Layout of the output folder::

    input0/dict.txt, input0/{split}.bin|.idx   sentence a, WordPiece ids (no [CLS]/[SEP])
    input1/...                                 sentence b (pair tasks)
    label/{split}.bin|.idx                     int64 class index (not for test splits)
    label/{split}.label                        regression scores, one per line (fairseq's
                                               RoBERTa-GLUE convention: its indexed datasets
                                               read every element back as int64)
    index/{split}.txt                          the examples' ids, for test-server files
    meta.json                                  task, labels, metrics, sizes, checksums
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from fairseq.data import indexed_dataset
from tqdm import tqdm

from fairseq_crild.data.glue_formats import (
    Example,
    GlueFormatError,
    GlueTask,
    get_task,
    read_split,
    split_path,
)
from fairseq_crild.data.wordpiece import build_tokenizer, encode_texts, read_lowercase_setting
from fairseq_crild.dictionary import load_bert_dictionary, vocab_fingerprint
from fairseq_crild.outputs import atomic_output_dir

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
CHUNK = 4096


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_tokens(path: str, ids: List[List[int]], vocab_size: int) -> None:
    builder = indexed_dataset.make_builder(path + ".bin", impl="mmap", vocab_size=vocab_size)
    for seq in ids:
        builder.add_item(torch.IntTensor(seq))
    builder.finalize(path + ".idx")


def _write_labels(path: str, values: np.ndarray) -> None:
    if values.dtype.kind == "f":
        with open(path + ".label", "w", encoding="utf-8") as f:
            f.writelines(f"{v!r}\n" for v in values.tolist())
        return
    builder = indexed_dataset.MMapIndexedDatasetBuilder(path + ".bin", dtype=values.dtype.type)
    for v in values:
        builder.add_item(torch.from_numpy(np.asarray([v], dtype=values.dtype)))
    builder.finalize(path + ".idx")


def _encode(tokenizer, texts: List[str], desc: str) -> List[List[int]]:
    out: List[List[int]] = []
    with tqdm(total=len(texts), desc=desc, unit="ex", leave=False) as bar:
        for start in range(0, len(texts), CHUNK):
            out.extend(encode_texts(tokenizer, texts[start:start + CHUNK]))
            bar.update(min(CHUNK, len(texts) - start))
    return out


def _label_array(task: GlueTask, examples: List[Example]) -> np.ndarray:
    if task.regression:
        return np.asarray([float(e.label) for e in examples], dtype=np.float64)
    return np.asarray([task.label_names.index(e.label) for e in examples], dtype=np.int64)


def _read_all(glue_dir: str, task: GlueTask) -> Dict[str, tuple]:
    """Reads every split first: a malformed file fails before anything is written."""
    found = {}
    for split in task.splits:
        path = split_path(glue_dir, task, split)
        if not os.path.isfile(path) and split in task.optional_splits:
            logger.warning(f"{path} not found: split {split!r} skipped")
            continue
        found[split] = (path, read_split(path, task, split))
    return found


def prepare_task(glue_dir: str, task_name: str, dict_path: str, out_dir: str,
                 lowercase: Optional[bool] = None, overwrite: bool = False,
                 workers: Optional[int] = None) -> Dict[str, Any]:
    """Reads, tokenises and binarises every split of a GLUE task into ``out_dir``.

    ``lowercase=None`` follows the tokenizer_config.json next to ``dict_path`` (written by
    convert_hf_bert.py), else lower-cases (uncased BERT). ``workers`` caps the tokenizer's
    threads. The folder appears only when complete; an existing one is refused unless
    ``overwrite``.
    """
    if workers:
        os.environ["RAYON_NUM_THREADS"] = str(workers)
    task = get_task(task_name)
    if not os.path.isdir(glue_dir):
        raise GlueFormatError(f"{glue_dir}: GLUE folder not found")
    dictionary = load_bert_dictionary(dict_path)
    if lowercase is None:
        setting = read_lowercase_setting(dict_path)
        lowercase = True if setting is None else setting
    tokenizer = build_tokenizer(dictionary, lowercase)
    splits = _read_all(glue_dir, task)
    meta: Dict[str, Any] = {
        "format_version": FORMAT_VERSION, "task": task.name,
        "label_names": list(task.label_names), "regression": task.regression,
        "num_classes": 1 if task.regression else len(task.label_names),
        "metrics": list(task.metrics), "main_metric": task.metrics[0],
        "is_pair": task.is_pair, "lowercase": lowercase, "splits": {}, "sources": {},
        "dict_sha256": sha256_file(dict_path), "vocab_sha256": vocab_fingerprint(dictionary),
    }
    with atomic_output_dir(out_dir, overwrite) as tmp:
        kinds = ["input0", "input1"] if task.is_pair else ["input0"]
        for kind in kinds:
            os.makedirs(os.path.join(tmp, kind))
            shutil.copyfile(dict_path, os.path.join(tmp, kind, "dict.txt"))
        os.makedirs(os.path.join(tmp, "index"))
        for split, (path, examples) in splits.items():
            name = f"{task.name} {split}"
            _write_tokens(os.path.join(tmp, "input0", split),
                          _encode(tokenizer, [e.text_a for e in examples], name + " a"),
                          len(dictionary))
            if task.is_pair:
                _write_tokens(os.path.join(tmp, "input1", split),
                              _encode(tokenizer, [e.text_b or "" for e in examples], name + " b"),
                              len(dictionary))
            if examples and examples[0].label is not None:
                os.makedirs(os.path.join(tmp, "label"), exist_ok=True)
                _write_labels(os.path.join(tmp, "label", split), _label_array(task, examples))
            with open(os.path.join(tmp, "index", split + ".txt"), "w", encoding="utf-8") as f:
                f.writelines(e.index + "\n" for e in examples)
            meta["splits"][split] = len(examples)
            meta["sources"][split] = {"file": os.path.abspath(path), "sha256": sha256_file(path)}
            logger.info(f"{name}: {len(examples)} examples from {path}")
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
    return meta
