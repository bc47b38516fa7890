"""GLUE data for RoBERTa teachers and students, following fairseq's RoBERTa GLUE recipe.

``examples/roberta/preprocess_GLUE_tasks.sh`` BPE-encodes each column, binarises it with
``fairseq-preprocess --only-source --srcdict dict.txt`` into ``input0/`` and ``input1/``
(every sentence ends with ``</s>``), and binarises labels with a label dictionary into
``label/``; ``sentence_prediction --init-token 0 --separator-token 2`` then feeds
``<s> A </s> </s> B </s>``. :func:`prepare_roberta_task` does the same with our strict GLUE
readers, so one folder serves both fairseq's ``sentence_prediction`` (to fine-tune the RoBERTa
teacher) and ``distill_glue`` (which reads ``meta.json``'s ``input_format: roberta``):

    input0/, input1/  dict.txt (the model's), {split}.bin/.idx   BPE ids + </s>
    label/            dict.txt (the task's labels in GLUE order), {split}.bin/.idx
                      (classification); {split}.label text (STS-B), as fairseq reads them
    index/{split}.txt, meta.json                                   as the BERT folders

Two deliberate differences from the shell recipe: labels are listed in the GLUE order (the
recipe's label dictionary is sorted by frequency, so a class index could mean another label
in another folder), and MNLI's mismatched splits are called ``valid_mm``/``test_mm`` (the
recipe's ``valid1``/``test1``), as in the BERT folders.

BPE through fairseq's own encoders (``fairseq.data.encoders.build_bpe``): ``sentencepiece``
(a local ``.model``; offline), ``gpt2`` (roberta.base/large; ``encoder.json`` and
``vocab.bpe``, by default downloaded from fairseq's URLs on first use, or local paths), or
``none`` when the TSV text is already BPE-encoded (space-separated dictionary symbols).
"""

from __future__ import annotations

import logging
import os
import shutil
from argparse import Namespace
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import Dictionary, indexed_dataset

from fairseq_crild.data.binarize import (
    INDEX_FILE,
    _is_pair,
    _read_all,
    _tool_version,
    sha256_file,
)
from fairseq_crild.data.dictionary import vocab_fingerprint
from fairseq_crild.data.glue_tasks import Example, GlueFormatError, GlueTask, get_task
from fairseq_crild.data.meta import GlueMeta, write_meta
from fairseq_crild.data.pair_dataset import SentencePairDataset, longest_first
from fairseq_crild.outputs import atomic_output_dir, check_output_dir

logger = logging.getLogger(__name__)

ROBERTA_FORMAT = "roberta"
MASK = "<mask>"
BPE_CHOICES = ("sentencepiece", "gpt2", "none")


def is_roberta_data(meta: GlueMeta) -> bool:
    """Whether a prepared folder's meta.json says RoBERTa layout (else BERT's)."""
    return meta.input_format == ROBERTA_FORMAT


def load_roberta_dictionary(path: str) -> Dictionary:
    """A RoBERTa dict.txt as fairseq's sentence_prediction/masked_lm tasks load it:
    ``<s> <pad> </s> <unk>`` first, then the file's symbols, then ``<mask>``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dictionary not found: {path}")
    try:
        d = Dictionary.load(path)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a fairseq dict.txt ({err})") from None
    d.add_symbol(MASK)
    return d


def sentencepiece_dictionary(model_path: str) -> Dictionary:
    """A fairseq dictionary of a sentencepiece model's pieces, in the model's id order,
    without its control/unknown pieces (fairseq's own specials take those roles)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.Load(model_path)
    d = Dictionary()
    specials = {d.bos_word, d.pad_word, d.eos_word, d.unk_word, MASK}
    for i in range(sp.GetPieceSize()):
        piece = sp.IdToPiece(i)
        if sp.IsControl(i) or sp.IsUnknown(i) or piece in specials:
            continue
        d.add_symbol(piece, n=1)
    return d


def load_roberta_labels(data_dir: str, split: str, regression: bool,
                        label_names: Sequence[str]) -> Optional[np.ndarray]:
    """Labels as fairseq's sentence_prediction reads them (class = label-dictionary index
    minus its specials; regression targets from ``label/{split}.label``), or None when the
    split is unlabelled. The label dictionary must list the task's labels in order."""
    folder = os.path.join(data_dir, "label")
    if regression:
        path = os.path.join(folder, split + ".label")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return np.asarray([float(line) for line in f if line.strip()], dtype=np.float32)
    prefix = os.path.join(folder, split)
    if not indexed_dataset.MMapIndexedDataset.exists(prefix):
        return None
    dict_path = os.path.join(folder, "dict.txt")
    d = Dictionary.load(dict_path)
    symbols = [d[i] for i in range(d.nspecial, len(d))]
    if label_names and symbols != list(label_names):
        raise GlueFormatError(f"{dict_path}: labels {symbols} differ from the task's "
                              f"{list(label_names)} (the class order would be wrong)")
    index = indexed_dataset.MMapIndexedDataset.Index(prefix + ".idx")
    if len(index) and not np.all(index.sizes == 2):
        raise GlueFormatError(f"{prefix}.idx: expected one label and </s> per example")
    flat = np.fromfile(prefix + ".bin", dtype=index.dtype, count=2 * len(index))
    pairs = flat.reshape(-1, 2).astype(np.int64)
    if len(pairs) and (np.any(pairs[:, 1] != d.eos()) or np.any(pairs[:, 0] < d.nspecial)):
        raise GlueFormatError(f"{prefix}.bin: not a label column binarised with {dict_path}")
    return pairs[:, 0] - d.nspecial


class RobertaPairDataset(SentencePairDataset):
    """``<s> a </s> </s> b </s>`` (or ``<s> a </s>``) without token types, as fairseq's
    sentence_prediction builds RoBERTa inputs; stored sentences end with ``</s>``.

    Longest-first truncation to ``max_positions`` as for BERT (fairseq's task would drop or
    tail-truncate over-long pairs instead). ``cls``/``sep`` are ``<s>``/``</s>``.
    """

    def __init__(self, input0, input1, labels, cls: int, sep: int, pad: int,
                 max_positions: int, **kwargs):
        super().__init__(input0, input1, labels, cls, sep, pad, max_positions, **kwargs)
        # stored sizes include each sentence's </s>: content + 2 (single) or + 4 (pair)
        len_a = np.asarray(input0.sizes, dtype=np.int64)[self.indices] + 1
        if input1 is not None:
            len_a = len_a + np.asarray(input1.sizes, dtype=np.int64)[self.indices] + 1
        self.sizes = np.minimum(len_a, max_positions)

    def _content(self, item: torch.Tensor) -> torch.Tensor:
        item = item.long()
        return item[:-1] if len(item) and int(item[-1]) == self.sep else item

    def __getitem__(self, i: int) -> Dict[str, Any]:
        j = int(self.indices[i])
        a = self._content(self.input0[j])
        bos, eos = a.new_tensor([self.cls]), a.new_tensor([self.sep])
        if self.is_pair:
            b = self._content(self.input1[j])
            la, lb = longest_first(len(a), len(b), self.max_positions - 4)
            source = torch.cat([bos, a[:la], eos, eos, b[:lb], eos])
        else:
            source = torch.cat([bos, a[: self.max_positions - 2], eos])
        item = {"id": j, "source": source}
        if self.labels is not None:
            item["target"] = self.labels[j]
        return item


# --------------------------------------------------------------------------- preparation


def build_bpe_encoder(bpe: str, sentencepiece_model: Optional[str] = None,
                      gpt2_encoder_json: Optional[str] = None,
                      gpt2_vocab_bpe: Optional[str] = None) -> Callable[[str], str]:
    """text -> space-separated BPE symbols, through fairseq's registered encoders."""
    if bpe == "none":
        return lambda text: " ".join(text.split())
    from fairseq.data import encoders

    if bpe == "sentencepiece":
        if not sentencepiece_model or not os.path.isfile(sentencepiece_model):
            raise FileNotFoundError(f"--sentencepiece-model {sentencepiece_model}: not found")
        encoder = encoders.build_bpe(Namespace(bpe="sentencepiece",
                                               sentencepiece_model=sentencepiece_model))
    elif bpe == "gpt2":
        from fairseq.data.encoders.gpt2_bpe import DEFAULT_ENCODER_JSON, DEFAULT_VOCAB_BPE

        encoder = encoders.build_bpe(Namespace(
            bpe="gpt2", gpt2_encoder_json=gpt2_encoder_json or DEFAULT_ENCODER_JSON,
            gpt2_vocab_bpe=gpt2_vocab_bpe or DEFAULT_VOCAB_BPE))
    else:
        raise ValueError(f"--bpe {bpe!r}: expected one of {', '.join(BPE_CHOICES)}")
    return lambda text: " ".join(encoder.encode(text.strip()).split())


def _fairseq_preprocess(dest: str, dict_path: str, files: Dict[str, str],
                        workers: int) -> None:
    """``fairseq-preprocess --only-source --srcdict dict_path`` over ``{split: file}``, with
    our split names: train -> --trainpref, valid* / test* -> --validpref / --testpref lists
    (fairseq names the extra ones valid1, test1: renamed back)."""
    from fairseq import options
    from fairseq_cli import preprocess

    groups: Dict[str, List[str]] = {"train": [], "valid": [], "test": []}
    for split in files:
        kind = "train" if split == "train" else "valid" if split.startswith("valid") else "test"
        groups[kind].append(split)
    argv = ["--only-source", "--srcdict", dict_path, "--destdir", dest,
            "--workers", str(workers), "--dataset-impl", "mmap"]
    for kind, splits in groups.items():
        if splits:
            argv += [f"--{kind}pref", ",".join(files[s] for s in splits)]
    args = options.get_preprocessing_parser().parse_args(argv)
    log = logging.getLogger(preprocess.__name__)
    before = list(log.handlers)
    try:
        preprocess.main(args)
    finally:  # fairseq adds a file handler per call: close it, keep the logger clean
        for handler in log.handlers[:]:
            if handler not in before:
                log.removeHandler(handler)
                handler.close()
        log_file = os.path.join(dest, "preprocess.log")
        if os.path.exists(log_file):
            os.remove(log_file)
    for kind, splits in groups.items():
        for k, split in enumerate(splits):
            fairseq_name = kind if k == 0 else f"{kind}{k}"
            if fairseq_name != split:
                for ext in (".bin", ".idx"):
                    os.replace(os.path.join(dest, fairseq_name + ext),
                               os.path.join(dest, split + ext))


def _one_line(text: str) -> str:
    """fairseq-preprocess reads files line by line (universal newlines): a stray \\r or \\n
    inside a sentence would shift every later row, so none may survive."""
    return " ".join(text.split())


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(_one_line(line) + "\n" for line in lines)


def _check_binarised(prefix: str, n: int, unk: int) -> Tuple[int, int]:
    """(tokens, <unk> tokens) of a binarised column, which must hold ``n`` sentences."""
    index = indexed_dataset.MMapIndexedDataset.Index(prefix + ".idx")
    if len(index) != n:
        raise RuntimeError(f"{prefix}.bin holds {len(index)} sentences, expected {n}")
    flat = np.fromfile(prefix + ".bin", dtype=index.dtype)
    return int(flat.size), int(np.count_nonzero(flat == unk))


def prepare_roberta_task(glue_dir: str, task: str, out_dir: str, bpe: str,
                         dict_path: Optional[str] = None,
                         sentencepiece_model: Optional[str] = None,
                         gpt2_encoder_json: Optional[str] = None,
                         gpt2_vocab_bpe: Optional[str] = None,
                         overwrite: bool = False, workers: int = 1) -> Dict[str, Any]:
    """Reads, BPE-encodes and binarises every split of a GLUE task into ``out_dir`` in
    fairseq's RoBERTa layout (module docstring). ``dict_path``: the RoBERTa model's
    dict.txt; with ``bpe='sentencepiece'`` it may be omitted, and the dictionary is the
    sentencepiece model's pieces (written as input0/dict.txt, for a model trained on it).
    Written atomically, like the BERT folders. Returns the meta.json contents."""
    spec: GlueTask = get_task(task)
    check_output_dir(out_dir, overwrite)
    if not os.path.isdir(glue_dir):
        raise GlueFormatError(f"{glue_dir}: GLUE folder not found")
    if bpe not in BPE_CHOICES:
        raise ValueError(f"--bpe {bpe!r}: expected one of {', '.join(BPE_CHOICES)}")
    if dict_path is None and bpe != "sentencepiece":
        raise ValueError(f"--dict is required with --bpe {bpe} (the RoBERTa model's dict.txt)")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if dict_path is not None:
        dictionary = load_roberta_dictionary(dict_path)
    encode = build_bpe_encoder(bpe, sentencepiece_model, gpt2_encoder_json, gpt2_vocab_bpe)
    splits, missing = _read_all(glue_dir, spec)
    is_pair = _is_pair(spec, splits)
    kinds = ["input0", "input1"] if is_pair else ["input0"]

    with atomic_output_dir(out_dir, overwrite) as tmp:
        raw = os.path.join(tmp, "raw")
        os.makedirs(raw)
        if dict_path is None:
            dict_path = os.path.join(raw, "dict.txt")
            sentencepiece_dictionary(sentencepiece_model).save(dict_path)
            dictionary = load_roberta_dictionary(dict_path)
        files: Dict[str, Dict[str, str]] = {kind: {} for kind in kinds + ["label"]}
        for split, (path, examples) in splits.items():
            for kind, column in zip(kinds, ("text_a", "text_b")):
                files[kind][split] = os.path.join(raw, f"{split}.{kind}")
                _write_lines(files[kind][split],
                             [encode(getattr(e, column) or "") for e in examples])
            if spec.has_labels(split):
                files["label"][split] = os.path.join(raw, f"{split}.label")
                _write_lines(files["label"][split], [_label_text(spec, e) for e in examples])
        tokens = unks = 0
        for kind in kinds:
            _fairseq_preprocess(os.path.join(tmp, kind), dict_path, files[kind], workers)
            for split, (_, examples) in splits.items():
                t, u = _check_binarised(os.path.join(tmp, kind, split), len(examples),
                                        dictionary.unk())
                tokens, unks = tokens + t, unks + u
        labelled = list(files["label"])
        if labelled:
            _write_labels(tmp, raw, spec, splits, files["label"], workers)
        os.makedirs(os.path.join(tmp, "index"))
        for split, (_, examples) in splits.items():
            with open(os.path.join(tmp, INDEX_FILE.format(split=split)), "w",
                      encoding="utf-8") as f:
                f.writelines(e.index + "\n" for e in examples)
        unk_rate = unks / max(tokens, 1)
        if unk_rate > 0.01:
            logger.warning(f"{100 * unk_rate:.1f}% of the tokens are <unk>: does {dict_path} "
                           f"belong to this BPE ({bpe})?")
        meta = {
            "format_version": 1, "input_format": ROBERTA_FORMAT,
            "tool": "fairseq-crild prepare_glue_roberta", "tool_version": _tool_version(),
            "task": spec.name, "label_names": list(spec.label_names),
            "regression": spec.regression, "num_classes": spec.num_classes,
            "metrics": list(spec.metrics), "main_metric": spec.main_metric,
            "is_pair": is_pair, "bpe": bpe,
            "bpe_model": os.path.abspath(sentencepiece_model) if bpe == "sentencepiece" else
            (gpt2_encoder_json or "fairseq default") if bpe == "gpt2" else None,
            "splits": {s: len(ex) for s, (_, ex) in splits.items()},
            "labelled_splits": labelled, "missing_splits": missing,
            "sources": {s: {"file": os.path.abspath(p), "sha256": sha256_file(p)}
                        for s, (p, _) in splits.items()},
            "dict_sha256": sha256_file(dict_path), "vocab_sha256": vocab_fingerprint(dictionary),
            "vocab_size": len(dictionary), "unk_rate": unk_rate, "index_file": INDEX_FILE,
            "fairseq_sentence_prediction": {
                "init_token": dictionary.bos(), "separator_token": dictionary.eos(),
                "num_classes": spec.num_classes, "regression_target": spec.regression},
        }
        write_meta(tmp, GlueMeta.from_json(meta))
        shutil.rmtree(raw)
    return meta


def _label_text(spec: GlueTask, example: Example) -> str:
    return repr(float(example.label)) if spec.regression else str(example.label)


def _write_labels(tmp: str, raw: str, spec: GlueTask, splits, files: Dict[str, str],
                  workers: int) -> None:
    folder = os.path.join(tmp, "label")
    if spec.regression:  # fairseq's recipe copies the scores as text
        os.makedirs(folder)
        for split, path in files.items():
            shutil.copyfile(path, os.path.join(folder, split + ".label"))
        return
    counts = Counter(e.label for e in splits["train"][1]) if "train" in splits else Counter()
    label_dict = os.path.join(raw, "label.dict.txt")
    with open(label_dict, "w", encoding="utf-8") as f:
        f.writelines(f"{name} {counts.get(name, 0)}\n" for name in spec.label_names)
    _fairseq_preprocess(folder, label_dict, files, workers)
    for split in files:
        _check_binarised(os.path.join(folder, split), len(splits[split][1]), -1)
