"""GLUE task specs (official TSV layouts, label orders, metrics) and a strict reader.

Why strict: a silently mis-parsed row (a shifted column, a truncated file) corrupts results
without any visible error, so every problem raises :class:`GlueFormatError` naming the file
and its 1-based line.

Reading rules:

* bytes are split on ``\\n`` only and a trailing ``\\r`` is dropped (CRLF files); a UTF-8 BOM
  is dropped; nothing else is interpreted: GLUE text holds unbalanced double quotes, so csv
  quoting stays off (fields are split on tabs);
* columns are located by header name where the file has a header (robust to column order and
  to MNLI's dev files carrying more label columns than train), by position where it has none
  (CoLA train/dev);
* blank lines at the end of a file are ignored, a blank line inside it is an error;
* every row has at most as many fields as the layout allows (the header's columns; CoLA's
  headerless train/dev: 4) and at least the columns read: a tab inside a sentence shifts
  the fields after it, so the row is refused rather than read with half a sentence (the
  authors' readers take fields by position and ignore extra ones). Checked on the real files
  of ../shared/data/glue (CoLA, RTE, STS-B, WNLI): every row has exactly the header's
  fields, none has an extra trailing column. Files exported with trailing tabs can be read
  with ``extra_columns="drop-empty"`` (``--extra-columns drop-empty``): extra fields that
  are all empty are dropped (counted in a warning), any other extra field is still refused;
* labels must be one of the task's ``label_names`` (MNLI's "-" gold label, absent from the
  official files, is an error too); STS-B scores must parse as finite floats, and scores
  outside [0, 5] are kept but warned about (file:line of the first, and how many);
* error messages echo at most a few dozen characters of the file's content (a file with
  CR-only line ends is one long line; the message says so instead of repeating it);
* test files have no labels: their examples carry ``label=None`` and the file's ids.

Besides the GLUE tasks, ``PAIRS`` reads unlabelled text for supplementary ILD data:
``GLUE_DIR/train.tsv`` [+ ``dev.tsv``] (the folder itself, no task sub-folder), header
``sentence1`` [``sentence2``]; without a sentence2 column the examples are single sentences.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)

Column = Union[str, int]  # a header name, or a 0-based column index (headerless files)


class GlueFormatError(CrildError, ValueError):
    """A GLUE file is missing or malformed; the message names the file (and line)."""


EXTRA_COLUMNS = ("refuse", "drop-empty")
ECHO_CHARS = 40  # the most characters of a file's content an error message repeats
MAX_MESSAGE = 600  # a last cap on any reader message (paths included)


def show(value: str, limit: int = ECHO_CHARS) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters with its full length named: what
    an error repeats of the data stays one readable line."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _error(message: str, text: Optional[str] = None) -> GlueFormatError:
    """A reader error, with a hint when the offending line holds carriage returns."""
    hint = ""
    if text is not None and "\r" in text:
        hint = (f" (the line holds {text.count(chr(13))} carriage return(s): CR-only line "
                "ends? convert them to \\n)")
    if len(message) + len(hint) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - len(hint)] + "..."
    return GlueFormatError(message + hint)


@dataclass(frozen=True)
class FileLayout:
    """Where the fields of one kind of file are. ``index=None``: ids are 0-based positions."""

    header: bool
    text_a: Column
    text_b: Optional[Column] = None
    label: Optional[Column] = None
    index: Optional[Column] = None
    text_b_optional: bool = False  # a header without the text_b column: single sentences
    columns: Optional[int] = None  # fields per row of a headerless file (header: its length)


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its files, their layouts, labels (in the fixed HF/GLUE order), metrics.

    ``files`` maps output split names (train, valid[, valid_mm], test[, test_mm]) to file
    names inside ``GLUE_DIR/<folder>``; ``labelled`` is the layout of train/dev files (None
    for tasks without labels), ``unlabelled`` the layout of test files.
    """

    name: str
    folder: str
    files: Tuple[Tuple[str, str], ...]
    labelled: Optional[FileLayout]
    unlabelled: FileLayout
    label_names: Tuple[str, ...] = ()
    regression: bool = False
    metrics: Tuple[str, ...] = ("accuracy",)
    # other (folder, file) places a file may be in, tried in order (AX: "diagnostic" folder)
    alternatives: Tuple[Tuple[str, str, str], ...] = ()
    # splits a preparation may skip when their file is absent; None: the test splits, unless
    # the task has nothing else
    optional: Optional[Tuple[str, ...]] = None
    # the documented range of regression scores: values outside are warned about, not refused
    label_range: Optional[Tuple[float, float]] = None
    # the official training-set size (examples in train.tsv): it fixes the number of updates
    # of each generated schedule; None for the sets without one (AX, PAIRS)
    train_size: Optional[int] = None

    @property
    def splits(self) -> Tuple[str, ...]:
        return tuple(split for split, _ in self.files)

    @property
    def is_pair(self) -> bool:
        return self.unlabelled.text_b is not None

    @property
    def num_classes(self) -> int:
        return 1 if self.regression else len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metrics[0] if self.metrics else ""

    def file_name(self, split: str) -> str:
        files = dict(self.files)
        if split not in files:
            raise GlueFormatError(f"{self.name} has no split {split!r} "
                                  f"(splits: {', '.join(self.splits)})")
        return files[split]

    @staticmethod
    def is_test(split: str) -> bool:
        return split.startswith("test")

    def has_labels(self, split: str) -> bool:
        """Test splits (and every split of a task without labels) carry none."""
        return self.labelled is not None and not self.is_test(split)

    def layout(self, split: str) -> FileLayout:
        if self.has_labels(split):
            assert self.labelled is not None
            return self.labelled
        return self.unlabelled

    @property
    def optional_splits(self) -> Tuple[str, ...]:
        """Splits a preparation may skip when their file is absent."""
        if self.optional is not None:
            return self.optional
        if all(self.is_test(s) for s in self.splits):
            return ()
        return tuple(s for s in self.splits if self.is_test(s))


_STD = (("train", "train.tsv"), ("valid", "dev.tsv"), ("test", "test.tsv"))
_NLI = ("entailment", "not_entailment")
_BINARY = ("0", "1")
_MNLI = ("contradiction", "entailment", "neutral")
_PAIR_TEST = FileLayout(True, "sentence1", "sentence2", index="index")

TASKS: Dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("CoLA", "CoLA", _STD,
             FileLayout(False, 3, label=1, columns=4),  # source, label, original, sentence
             FileLayout(True, "sentence", index="index"), _BINARY, metrics=("mcc",),
             train_size=8551),
    GlueTask("SST-2", "SST-2", _STD,
             FileLayout(True, "sentence", label="label"),
             FileLayout(True, "sentence", index="index"), _BINARY, train_size=67349),
    GlueTask("MRPC", "MRPC", _STD,
             FileLayout(True, "#1 String", "#2 String", label="Quality"),
             FileLayout(True, "#1 String", "#2 String", index="index"), _BINARY,
             metrics=("f1", "accuracy"), train_size=3668),
    GlueTask("STS-B", "STS-B", _STD,
             FileLayout(True, "sentence1", "sentence2", label="score", index="index"),
             _PAIR_TEST, regression=True, metrics=("pearson", "spearman"),
             label_range=(0.0, 5.0), train_size=5749),
    GlueTask("QQP", "QQP", _STD,
             FileLayout(True, "question1", "question2", label="is_duplicate", index="id"),
             FileLayout(True, "question1", "question2", index="id"), _BINARY,
             metrics=("f1", "accuracy"), train_size=363846),
    GlueTask("MNLI", "MNLI",
             (("train", "train.tsv"), ("valid", "dev_matched.tsv"),
              ("valid_mm", "dev_mismatched.tsv"), ("test", "test_matched.tsv"),
              ("test_mm", "test_mismatched.tsv")),
             FileLayout(True, "sentence1", "sentence2", label="gold_label", index="index"),
             _PAIR_TEST, _MNLI, train_size=392702),
    GlueTask("QNLI", "QNLI", _STD,
             FileLayout(True, "question", "sentence", label="label", index="index"),
             FileLayout(True, "question", "sentence", index="index"), _NLI,
             train_size=104743),
    GlueTask("RTE", "RTE", _STD,
             FileLayout(True, "sentence1", "sentence2", label="label", index="index"),
             _PAIR_TEST, _NLI, train_size=2490),
    GlueTask("WNLI", "WNLI", _STD,
             FileLayout(True, "sentence1", "sentence2", label="label", index="index"),
             _PAIR_TEST, _BINARY, train_size=635),
    # the diagnostic set: test only, predicted with an MNLI model (hence MNLI's labels)
    GlueTask("AX", "AX", (("test", "AX.tsv"),), None, _PAIR_TEST, _MNLI,
             alternatives=(("test", "diagnostic", "diagnostic.tsv"),
                           ("test", "diagnostic", "AX.tsv"), ("test", "AX", "diagnostic.tsv"))),
    # unlabelled text (supplementary ILD data), in GLUE_DIR itself; dev.tsv optional
    GlueTask("PAIRS", "", (("train", "train.tsv"), ("valid", "dev.tsv")), None,
             FileLayout(True, "sentence1", "sentence2", text_b_optional=True), metrics=(),
             optional=("valid",)),
]}


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


_ALIASES: Dict[str, str] = {_key(name): name for name in TASKS}
_ALIASES.update({"sst": "SST-2", "sts": "STS-B", "diagnostic": "AX", "mnlim": "MNLI",
                 "mnlimm": "MNLI"})


#: the split name of a fixed sample of the training inputs that the task evaluates like dev
#: (``--valid-subset valid,train_probe``): the ILD loss on training inputs along stage 1
TRAIN_PROBE = "train_probe"


def get_task(name: str) -> GlueTask:
    """Case- and punctuation-insensitive lookup ("sts-b", "STSB", "sst2", "ax", ...)."""
    task = _ALIASES.get(_key(name))
    if task is None:
        raise GlueFormatError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[task]


@dataclass
class Example:
    """One row: ``label`` is the label name as written (classification), a float
    (regression), or None (test)."""

    index: str
    text_a: str
    text_b: Optional[str] = None
    label: Union[str, float, None] = None
    line: int = field(default=0, repr=False, compare=False)


def split_path(glue_dir: str, task: GlueTask, split: str) -> str:
    """Path of ``split``'s file; the first existing place wins, else the official one."""
    official = os.path.join(glue_dir, task.folder, task.file_name(split))
    candidates = [official] + [os.path.join(glue_dir, folder, fname)
                               for s, folder, fname in task.alternatives if s == split]
    return next((p for p in candidates if os.path.isfile(p)), official)


def read_split(glue_dir: str, task: GlueTask, split: str) -> List[Example]:
    """Reads ``split`` of ``task`` from a GLUE folder (``GLUE_DIR/<task folder>/<file>``)."""
    return read_tsv(split_path(glue_dir, task, split), task, split)


def _lines(path: str) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of every line; see the module docstring."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _error(f"{path}:{lineno}: not UTF-8 ({err.reason} at byte "
                             f"{err.start})") from None
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield lineno, text


def _rows(path: str) -> Iterator[Tuple[int, List[str]]]:
    """Tab-split rows, blank lines at the end dropped, blank lines before them refused."""
    blank = None
    for lineno, text in _lines(path):
        if not text:
            blank = blank or lineno
            continue
        if blank is not None:
            raise _error(f"{path}:{blank}: blank line inside the file")
        yield lineno, text.split("\t")


def _resolve(col: Optional[Column], header: Optional[List[str]], path: str,
             what: str) -> Optional[int]:
    if col is None or isinstance(col, int):
        return col
    assert header is not None
    names = [h.strip() for h in header]
    if col not in names:
        shown = ", ".join(show(n, 30) for n in names[:8]) + (
            f", ... ({len(names)} in all)" if len(names) > 8 else "")
        raise _error(f"{path}:1: header has no {what} column {col!r} (columns: {shown})",
                     "\t".join(header))
    if names.count(col) > 1:
        raise _error(f"{path}:1: header names the {what} column {col!r} twice")
    return names.index(col)


def read_tsv(path: str, task: GlueTask, split: str,
             extra_columns: str = "refuse") -> List[Example]:
    """Reads one split file strictly (rules in the module docstring). ``extra_columns``:
    ``refuse`` (default) or ``drop-empty`` (extra fields that are all empty are dropped)."""
    if extra_columns not in EXTRA_COLUMNS:
        raise ValueError(f"extra_columns must be one of {', '.join(EXTRA_COLUMNS)}, "
                         f"got {extra_columns!r}")
    if not os.path.isfile(path):
        expected = os.path.join("GLUE_DIR", task.folder, task.file_name(split))
        raise GlueFormatError(f"{path}: file not found ({task.name} split {split!r}: expected "
                              f"{expected})")
    layout = task.layout(split)
    rows = _rows(path)
    header: Optional[List[str]] = None
    if layout.header:
        first = next(rows, None)
        if first is None:
            raise GlueFormatError(f"{path}: empty file ({task.name} {split})")
        header = first[1]
    fields = ["text_a", "text_b", "label", "index"]
    if layout.text_b_optional and header is not None and \
            layout.text_b not in [h.strip() for h in header]:
        fields.remove("text_b")
    cols = {name: _resolve(getattr(layout, name), header, path, name) if name in fields
            else None for name in ("text_a", "text_b", "label", "index")}
    needed = 1 + max(c for c in cols.values() if c is not None)
    allowed = len(header) if header is not None else (layout.columns or needed)
    examples: List[Example] = []
    dropped = 0
    outside: List[Tuple[int, float]] = []
    for lineno, row in rows:
        if len(row) < needed:
            raise _error(f"{path}:{lineno}: {len(row)} column(s), expected at least "
                         f"{needed} ({task.name} {split})", "\t".join(row))
        if len(row) > allowed:
            if extra_columns == "drop-empty" and not any(c.strip() for c in row[allowed:]):
                dropped += 1
                row = row[:allowed]
            else:
                raise _error(
                    f"{path}:{lineno}: {len(row)} fields, the layout allows {allowed} "
                    f"({task.name} {split}; a tab inside a text?); first extra field: "
                    f"{show(row[allowed])}", "\t".join(row))
        label = None
        if cols["label"] is not None:
            label = _parse_label(row[cols["label"]], task, path, lineno)
            if task.label_range is not None and isinstance(label, float) and not \
                    task.label_range[0] <= label <= task.label_range[1]:
                outside.append((lineno, label))
        examples.append(Example(
            index=row[cols["index"]].strip() if cols["index"] is not None else str(len(examples)),
            text_a=row[cols["text_a"]],
            text_b=row[cols["text_b"]] if cols["text_b"] is not None else None,
            label=label,
            line=lineno,
        ))
    if not examples:
        what = "header only, no examples" if header is not None else "empty file"
        raise GlueFormatError(f"{path}: {what} ({task.name} {split})")
    if dropped:
        logger.warning(f"{path}: dropped the empty extra field(s) of {dropped} row(s) "
                       "(--extra-columns drop-empty)")
    if outside:
        lo, hi = task.label_range or (0.0, 0.0)
        logger.warning(f"{path}:{outside[0][0]}: score {outside[0][1]!r} outside "
                       f"[{lo:g}, {hi:g}] ({task.name}'s range); {len(outside)} such score(s) "
                       "in the file, kept as written")
    return examples


def _parse_label(raw: str, task: GlueTask, path: str, lineno: int) -> Union[str, float]:
    raw = raw.strip()
    if task.regression:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise _error(f"{path}:{lineno}: score {show(raw)} is not a finite number "
                         f"({task.name})", raw)
        return value
    if raw not in task.label_names:
        raise _error(f"{path}:{lineno}: unknown label {show(raw)} ({task.name} labels: "
                     f"{', '.join(task.label_names)})", raw)
    return raw


def label_ids(task: GlueTask, examples: List[Example]) -> List[Union[int, float]]:
    """Class indices (positions in ``label_names``) or scores, in example order."""
    if task.regression:
        return [float(e.label) for e in examples]  # type: ignore[arg-type]
    return [task.label_names.index(e.label) for e in examples]  # type: ignore[arg-type]
