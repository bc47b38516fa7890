"""Property tests of the GLUE readers (hypothesis): a well-formed file of any task and split
parses to exactly its rows; any mutation of one either parses or raises GlueFormatError,
the readers' documented error (data/glue_tasks.py) -- nothing else escapes."""

import math
import os
import tempfile
from typing import List, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairseq_crild.data.binarize import _is_pair, _read_all
from fairseq_crild.data.glue_tasks import TASKS, Example, GlueFormatError, GlueTask, read_tsv

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)),
               min_size=1, max_size=12)
NOISE = [b"\t", b"\n", b"\r", b"\r\n", b"\n\n", b"\xff", b"\xc3", b"\xef\xbb\xbf", b'"', b"-",
         b"nan", b"inf", b"1e999", b" ", b"\x00", "\u00e9".encode(), b"entailment", b"0", b"1"]
SPLITS = [(name, split) for name, task in TASKS.items() for split in task.splits]


def _columns(task: GlueTask, split: str, n_extra: int) -> Tuple[Optional[List[str]], dict, int]:
    """(header or None, {field: column}, width) of a file of ``split``."""
    layout = task.layout(split)
    fields = {f: getattr(layout, f) for f in ("text_a", "text_b", "label", "index")
              if getattr(layout, f) is not None}
    if not layout.header:  # positional (CoLA train/dev): 4 columns
        return None, fields, 1 + max(fields.values())
    names = list(fields.values()) + [f"extra{i}" for i in range(n_extra)]
    return names, {f: names.index(c) for f, c in fields.items()}, len(names)


@st.composite
def rows_of_a_file(draw):
    """(task, split, header?, rows of cells, expected examples) of a well-formed file of a
    random task/split in the official layout (columns shuffled, extra columns)."""
    name, split = draw(st.sampled_from(SPLITS))
    task = TASKS[name]
    header, cols, width = _columns(task, split, draw(st.integers(0, 2)))
    order = draw(st.permutations(range(width))) if header else list(range(width))
    expected, lines = [], []
    if header is not None:
        lines.append([header[i] for i in order])
    for row_no in range(draw(st.integers(1, 5))):
        cells = [draw(TEXT) for _ in range(width)]
        label = None
        if "label" in cols:
            if task.regression:
                label = draw(st.floats(0, 5, allow_nan=False))
                cells[cols["label"]] = repr(label)
            else:
                label = draw(st.sampled_from(task.label_names))
                cells[cols["label"]] = draw(st.sampled_from(["", " "])) + label
        if "index" in cols:
            cells[cols["index"]] = str(draw(st.integers(0, 10**6)))
        expected.append(Example(
            index=cells[cols["index"]] if "index" in cols else str(row_no),
            text_a=cells[cols["text_a"]],
            text_b=cells[cols["text_b"]] if "text_b" in cols else None, label=label))
        lines.append([cells[i] for i in order])
    return task, split, header is not None, lines, expected


@st.composite
def encoded(draw, lines) -> bytes:
    """The rows as a file: LF or CRLF, maybe a BOM, maybe trailing blank lines."""
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join("\t".join(cells) for cells in lines) + eol * draw(st.integers(0, 2))
    return (draw(st.sampled_from(["", "\ufeff"])) + text).encode("utf-8")


@st.composite
def well_formed(draw) -> Tuple[GlueTask, str, bytes, List[Example]]:
    task, split, _, lines, expected = draw(rows_of_a_file())
    return task, split, draw(encoded(lines)), expected


BAD_CELLS = ["", " ", "nan", "inf", "-1e999", "-", "x", '"', "3.5", "0", "1", "2",
             "entailment", "neutral", "not_entailment", "\u00e9", "\x00"]


@st.composite
def mutated(draw) -> Tuple[GlueTask, str, bytes]:
    """A well-formed file with a few row-level faults (bad cell, missing or extra column,
    blank line inside, a stray header) or byte-level ones (noise, invalid UTF-8, cut off),
    or pure noise."""
    task, split, has_header, lines, _ = draw(rows_of_a_file())
    if draw(st.integers(0, 19)) == 0:
        return task, split, draw(st.binary(max_size=200))
    first = 1 if has_header and draw(st.integers(0, 4)) else 0  # headers are hit less often
    for _ in range(draw(st.integers(1, 3))):
        if len(lines) <= first:
            break
        row = draw(st.integers(first, len(lines) - 1))
        col = draw(st.integers(0, len(lines[row]) - 1))
        op = draw(st.sampled_from(["cell", "drop", "tab", "blank", "dup_header"]))
        if op == "cell":
            lines[row][col] = draw(st.sampled_from(BAD_CELLS))
        elif op == "drop" and len(lines[row]) > 1:
            del lines[row][col]
        elif op == "tab":
            lines[row][col] += "\t" + draw(st.sampled_from(BAD_CELLS))
        elif op == "blank":
            lines.insert(row, [""])
        elif op == "dup_header" and has_header:
            lines.insert(row, list(lines[0]))
    data = draw(encoded(lines))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data = data[:at] + draw(st.sampled_from(NOISE)) + data[at:]
        else:
            data = data[:at]
    return task, split, data


def _read(folder: str, task: GlueTask, split: str, data: bytes):
    path = os.path.join(folder, "file.tsv")
    with open(path, "wb") as f:
        f.write(data)
    return read_tsv(path, task, split)


@SETTINGS
@given(well_formed())
def test_well_formed_files_parse_to_their_rows(case):
    task, split, data, expected = case
    with tempfile.TemporaryDirectory() as tmp:
        got = _read(tmp, task, split, data)
    assert [(e.index, e.text_a, e.text_b) for e in got] == \
        [(e.index, e.text_a, e.text_b) for e in expected]
    for g, e in zip(got, expected):
        if task.regression and e.label is not None:
            assert math.isclose(g.label, e.label, rel_tol=0, abs_tol=0)
        else:
            assert g.label == e.label


@SETTINGS
@given(mutated())
def test_malformed_files_parse_or_raise_the_documented_error(case):
    task, split, data = case
    with tempfile.TemporaryDirectory() as tmp:
        try:
            examples = _read(tmp, task, split, data)
        except GlueFormatError as err:
            assert "file.tsv" in str(err)  # the message names the file
            return
    # what parses is well-typed: never an empty file, labels valid, scores finite
    assert examples
    for e in examples:
        assert isinstance(e.text_a, str) and isinstance(e.index, str)
        if not task.has_labels(split):
            assert e.label is None
        elif task.regression:
            assert isinstance(e.label, float) and math.isfinite(e.label)
        else:
            assert e.label in task.label_names


@SETTINGS
@given(st.lists(st.one_of(st.none(), mutated()), min_size=2, max_size=2))
def test_pairs_folder_reads_whole_or_raises(files):
    """prepare_glue's first step (every split read before anything is written) on a PAIRS
    folder whose train/dev files are malformed or missing (dev is optional)."""
    task = TASKS["PAIRS"]
    with tempfile.TemporaryDirectory() as tmp:
        for (split, fname), case in zip(task.files, files):
            if case is not None:
                with open(os.path.join(tmp, fname), "wb") as f:
                    f.write(case[2])
        try:
            found, missing = _read_all(tmp, task)
            pair = _is_pair(task, found)
        except GlueFormatError:
            return
    assert "train" in found and set(found) | set(missing) == {"train", "valid"}
    assert isinstance(pair, bool)
