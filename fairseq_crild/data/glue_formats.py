"""The official GLUE TSV layouts, one spec per task, and a strict reader for them.

Columns are found by header name where a file has a header (robust to column order: MNLI's
dev files have more label columns than train), by position where it has none (CoLA's
train/dev). Files are read as UTF-8 (a BOM is dropped), split on tabs only: GLUE text holds
unbalanced double quotes, so csv quoting must stay off. Every problem raises
:class:`GlueFormatError` naming the file and its 1-based line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

Column = Union[str, int, None]


class GlueFormatError(ValueError):
    """A GLUE file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class Layout:
    """Where the fields of one kind of file are: header names, or 0-based column indices."""

    header: bool
    text_a: Column
    text_b: Column = None
    label: Column = None
    index: Column = None


@dataclass(frozen=True)
class GlueTask:
    name: str
    folders: Tuple[str, ...]
    splits: Dict[str, str]  # output split -> file name
    labelled: Optional[Layout]
    unlabelled: Layout
    label_names: Tuple[str, ...] = ()
    regression: bool = False
    metrics: Tuple[str, ...] = ("accuracy",)
    optional_splits: Tuple[str, ...] = ("test", "test_mm")

    @property
    def is_pair(self) -> bool:
        return self.unlabelled.text_b is not None

    def layout(self, split: str) -> Layout:
        if split.startswith("test") or self.labelled is None:
            return self.unlabelled
        return self.labelled


_STD = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}
_NLI = ("entailment", "not_entailment")
_BINARY = ("0", "1")
_MNLI = ("contradiction", "entailment", "neutral")

TASKS: Dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("CoLA", ("CoLA",), _STD, Layout(False, 3, label=1),
             Layout(True, "sentence", index="index"), _BINARY, metrics=("mcc",)),
    GlueTask("SST-2", ("SST-2",), _STD, Layout(True, "sentence", label="label"),
             Layout(True, "sentence", index="index"), _BINARY),
    GlueTask("MRPC", ("MRPC",), _STD,
             Layout(True, "#1 String", "#2 String", label="Quality"),
             Layout(True, "#1 String", "#2 String", index="index"), _BINARY,
             metrics=("f1", "accuracy")),
    GlueTask("STS-B", ("STS-B",), _STD,
             Layout(True, "sentence1", "sentence2", label="score", index="index"),
             Layout(True, "sentence1", "sentence2", index="index"), regression=True,
             metrics=("pearson", "spearman")),
    GlueTask("QQP", ("QQP",), _STD,
             Layout(True, "question1", "question2", label="is_duplicate", index="id"),
             Layout(True, "question1", "question2", index="id"), _BINARY,
             metrics=("f1", "accuracy")),
    GlueTask("MNLI", ("MNLI",),
             {"train": "train.tsv", "valid": "dev_matched.tsv", "valid_mm": "dev_mismatched.tsv",
              "test": "test_matched.tsv", "test_mm": "test_mismatched.tsv"},
             Layout(True, "sentence1", "sentence2", label="gold_label", index="index"),
             Layout(True, "sentence1", "sentence2", index="index"), _MNLI),
    GlueTask("QNLI", ("QNLI",), _STD,
             Layout(True, "question", "sentence", label="label", index="index"),
             Layout(True, "question", "sentence", index="index"), _NLI),
    GlueTask("RTE", ("RTE",), _STD,
             Layout(True, "sentence1", "sentence2", label="label", index="index"),
             Layout(True, "sentence1", "sentence2", index="index"), _NLI),
    GlueTask("WNLI", ("WNLI",), _STD,
             Layout(True, "sentence1", "sentence2", label="label", index="index"),
             Layout(True, "sentence1", "sentence2", index="index"), _BINARY),
    # the diagnostic set: test only, predicted with an MNLI model
    GlueTask("AX", ("diagnostic", "AX"), {"test": "diagnostic.tsv"}, None,
             Layout(True, "sentence1", "sentence2", index="index"), _MNLI),
    # unlabelled text pairs (supplementary ILD data): train.tsv [+ dev.tsv], header
    # sentence1 [sentence2]
    GlueTask("PAIRS", ("",), {"train": "train.tsv", "valid": "dev.tsv"}, None,
             Layout(True, "sentence1", "sentence2"), (), optional_splits=("valid",)),
]}

_ALIASES = {"".join(c for c in name.lower() if c.isalnum()): name for name in TASKS}
_ALIASES.update({"stsb": "STS-B", "sst": "SST-2", "diagnostic": "AX", "mnlim": "MNLI"})


def get_task(name: str) -> GlueTask:
    """Case- and punctuation-insensitive lookup ("sts-b", "STSB", "sst2", ...)."""
    key = "".join(c for c in name.lower() if c.isalnum())
    if key not in _ALIASES:
        raise GlueFormatError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


@dataclass
class Example:
    index: str
    text_a: str
    text_b: Optional[str] = None
    label: Union[str, float, None] = None
    line: int = field(default=0, repr=False)


def split_path(glue_dir: str, task: GlueTask, split: str) -> str:
    """The file of ``split``; the first existing candidate folder wins (AX has two names)."""
    file_name = task.splits[split]
    if task.name == "AX":
        for folder, fname in (("diagnostic", "diagnostic.tsv"), ("AX", "AX.tsv")):
            path = os.path.join(glue_dir, folder, fname)
            if os.path.isfile(path):
                return path
    for folder in task.folders:
        candidates = [glue_dir] if folder == "" else [os.path.join(glue_dir, folder), glue_dir]
        for base in candidates:
            path = os.path.join(base, file_name)
            if os.path.isfile(path):
                return path
    return os.path.join(glue_dir, task.folders[0], file_name)


def _resolve(col: Column, header: Optional[List[str]], path: str, what: str) -> Optional[int]:
    if col is None or isinstance(col, int):
        return col
    assert header is not None
    if col not in header:
        raise GlueFormatError(f"{path}:1: header has no {what} column {col!r} "
                              f"(columns: {', '.join(header)})")
    return header.index(col)


def read_split(path: str, task: GlueTask, split: str) -> List[Example]:
    """Reads one split file strictly; see the module docstring for the rules."""
    if not os.path.isfile(path):
        raise GlueFormatError(f"{path}: file not found ({task.name} split {split!r}; pass the "
                              "GLUE folder that contains the task folder)")
    layout = task.layout(split)
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = [line.rstrip("\r\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise GlueFormatError(f"{path}: empty file")
    header = lines[0].split("\t") if layout.header else None
    first = 1 if layout.header else 0
    if len(lines) <= first:
        raise GlueFormatError(f"{path}: header only, no examples")
    cols = {name: _resolve(getattr(layout, name), header, path, name)
            for name in ("text_a", "text_b", "label", "index")}
    needed = 1 + max(c for c in cols.values() if c is not None)
    examples = []
    for lineno, line in enumerate(lines[first:], start=first + 1):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) < needed:
            raise GlueFormatError(f"{path}:{lineno}: {len(row)} columns, expected at least "
                                  f"{needed} ({task.name} {split})")
        label = _parse_label(row[cols["label"]], task, path, lineno) \
            if cols["label"] is not None else None
        examples.append(Example(
            index=row[cols["index"]] if cols["index"] is not None else str(len(examples)),
            text_a=row[cols["text_a"]],
            text_b=row[cols["text_b"]] if cols["text_b"] is not None else None,
            label=label, line=lineno,
        ))
    return examples


def _parse_label(raw: str, task: GlueTask, path: str, lineno: int) -> Union[str, float]:
    raw = raw.strip()
    if task.regression:
        try:
            return float(raw)
        except ValueError:
            raise GlueFormatError(f"{path}:{lineno}: score {raw!r} is not a number") from None
    if raw not in task.label_names:
        raise GlueFormatError(f"{path}:{lineno}: unknown label {raw!r} (expected one of "
                              f"{', '.join(task.label_names)})")
    return raw
