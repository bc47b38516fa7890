"""Fuzzing prepare_glue end to end, in-process through scripts/prepare_glue.

Every case runs ``main([... --out OUT --overwrite])`` where OUT already holds a good earlier
result, then checks:

* the outcome is clean: exit 0, or exit 2 with exactly one ``prepare_glue: error:`` line on
  stderr naming ``file:line`` where the fault is in a row (no traceback, nothing else raised);
* an accepted input gives the right result: the examples (ids, labels, word pieces) that an
  independent plain-Python reading of the documented rules gives (:func:`reference`);
* no data is lost: a refused run leaves OUT byte-identical, and the inputs (GLUE folder,
  dictionary folder) are byte-identical after every run.

Two sets: a named catalogue of malformed files and arguments, each with its expected outcome
written by hand, and hypothesis-generated mutations (derandomised, so the suite is the same
on every run) judged by :func:`reference`. The last test prints the table of the issue.
"""

import collections
import contextlib
import io
import math
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairseq_crild.data.binarize import load_labels, read_index
from fairseq_crild.data.dictionary import dictionary_from_vocab, load_bert_dictionary
from fairseq_crild.data.tokenization import build_tokenizer, encode_texts
from tests.helpers_files import tree_digest

pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "a", "dog", "ran",
         ".", "on", "mat", "is", "big", "small", "\"", "!", "?", "he", "said", "hi", "it"]
RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"
STSB_COLS = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
GOOD = {
    "RTE/train.tsv": RTE_HEAD + "0\tthe cat sat .\ta dog ran .\tentailment\n"
                                "1\tthe dog is big\ta cat is small\tnot_entailment\n"
                                "2\the said \"hi\ta mat\tentailment\n",
    "RTE/dev.tsv": RTE_HEAD + "3\tthe mat\ta cat sat on the mat\tnot_entailment\n",
    "RTE/test.tsv": "index\tsentence1\tsentence2\n4\tthe cat\ta dog !\n5\tis it ?\tit is\n",
    "CoLA/train.tsv": "gj04\t1\t\tthe cat sat .\ngj04\t0\t*\tcat the sat\ngj04\t1\t\ta dog ran\n",
    "CoLA/dev.tsv": "gj04\t0\t*\tsat sat",
    "CoLA/test.tsv": "index\tsentence\n0\tthe dog sat .\n1\ta cat\n",
    "STS-B/train.tsv": STSB_COLS + "\tscore\n0\tg\tf\t2012\t1\tn\tn\tthe cat\ta cat\t4.5\n"
                                  "1\tg\tf\t2012\t2\tn\tn\ta dog ran\tthe mat\t0.25\n",
    "STS-B/dev.tsv": STSB_COLS + "\tscore\n2\tg\tf\t2012\t3\tn\tn\tthe dog\ta dog\t3\n",
    "STS-B/test.tsv": STSB_COLS + "\n3\tg\tf\t2012\t4\tn\tn\tis it\tit is\n",
}
# what the reader documents, per task: (folder, {split: file}, header per split or None,
# {field: column name or position}, allowed fields of a headerless file, labels or None)
LAYOUTS = {
    "RTE": ("RTE", {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"},
            {"text_a": "sentence1", "text_b": "sentence2", "label": "label", "index": "index"},
            ("entailment", "not_entailment")),
    "CoLA": ("CoLA", {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"},
             {"text_a": 3, "label": 1}, ("0", "1")),
    "STS-B": ("STS-B", {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"},
              {"text_a": "sentence1", "text_b": "sentence2", "label": "score",
               "index": "index"}, None),
}
OUTCOMES: List[str] = []  # one per case: clean-error | correct | crash | wrong | lost


class Refused(Exception):
    """The reference refuses the file at ``line`` (None: the file as a whole)."""

    def __init__(self, line: Optional[int]):
        super().__init__(line)
        self.line = line


def reference(task: str, split: str, data: Optional[bytes],
              drop_empty: bool = False) -> Optional[List[Tuple[str, str, Optional[str], object]]]:
    """The rows (index, text_a, text_b, label) of one file by the rules of
    fairseq_crild/data/glue_tasks.py, written again from its docstring in plain Python;
    None for a missing optional (test) file; raises :class:`Refused`."""
    if data is None:
        if split == "test":
            return None
        raise Refused(None)
    _, _, fields, labels = LAYOUTS[task]
    headerless = task == "CoLA" and split != "test"
    wanted = {"text_a": "sentence", "index": "index"} if task == "CoLA" else dict(fields)
    if split == "test":
        wanted.pop("label", None)
    cols, width = (dict(fields), 4) if headerless else (None, None)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the final newline ends the last line
    out: list = []
    blank = None
    for no, raw in enumerate(lines, start=1):  # one pass, in order: the first fault counts
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(no)
        if no == 1 and text.startswith("\ufeff"):
            text = text[1:]
        if text == "":
            blank = blank or no
            continue
        if blank is not None:
            raise Refused(blank)  # a blank line with text after it
        cells = text.split("\t")
        if cols is None:  # the header
            header = [h.strip() for h in cells]
            if any(c not in header or header.count(c) > 1 for c in wanted.values()):
                raise Refused(1)
            cols = {f: header.index(c) for f, c in wanted.items()}
            width = len(header)
            continue
        if len(cells) < 1 + max(cols.values()):
            raise Refused(no)
        if len(cells) > width:
            if drop_empty and all(c.strip() == "" for c in cells[width:]):
                cells = cells[:width]
            else:
                raise Refused(no)
        label = None
        if "label" in cols:
            raw_label = cells[cols["label"]].strip()
            if labels is None:
                try:
                    label = float(raw_label)
                except ValueError:
                    raise Refused(no)
                if not math.isfinite(label):
                    raise Refused(no)
            elif raw_label not in labels:
                raise Refused(no)
            else:
                label = labels.index(raw_label)
        index = cells[cols["index"]].strip() if "index" in cols else str(len(out))
        out.append((index, cells[cols["text_a"]],
                    cells[cols["text_b"]] if "text_b" in cols else None, label))
    if not out:
        raise Refused(None)
    return out




class World:
    """A GLUE folder, a dictionary folder and an existing output per task, built once; each
    case works on a fresh copy of the GLUE folder."""

    def __init__(self, base: str):
        from scripts.prepare_glue import main

        self.base, self.main = base, main
        self.model = os.path.join(base, "model")
        os.makedirs(self.model)
        self.dict = os.path.join(self.model, "dict.txt")
        dictionary_from_vocab(VOCAB).save(self.dict)
        self.pristine = os.path.join(base, "pristine")
        for name, text in GOOD.items():
            os.makedirs(os.path.dirname(os.path.join(self.pristine, name)), exist_ok=True)
            with open(os.path.join(self.pristine, name), "w", encoding="utf-8",
                      newline="") as f:
                f.write(text)
        self.d = load_bert_dictionary(self.dict)
        self.tok = build_tokenizer(self.d, True)
        self.model_digest = tree_digest(self.model)
        self.outs = {}
        for task in LAYOUTS:
            out = os.path.join(base, "good", task)
            assert self._run(self.pristine, task, out)[0] == 0
            self.outs[task] = (out, tree_digest(out))

    def _run(self, glue: str, task: str, out: str, extra=(), dict_path=None):
        err = io.StringIO()
        argv = ["--glue-dir", glue, "--task", task, "--dict", dict_path or self.dict,
                "--out", out, "--overwrite", "--workers", "1", *extra]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = self.main(argv)
        return rc, err.getvalue()

    def case(self, task: str, files: Dict[str, Optional[bytes]], extra=(), out=None,
             dict_path=None) -> Tuple[str, str, int, str]:
        """Runs one case on a copy of the GLUE folder with ``files`` replaced (None: removed).
        Returns (verdict, glue folder, rc, stderr); the caller checks what it expects."""
        work = tempfile.mkdtemp(dir=self.base, prefix="case-")
        glue = os.path.join(work, "glue")
        shutil.copytree(self.pristine, glue)
        for name, data in files.items():
            path = os.path.join(glue, name)
            if data is None:
                os.remove(path)
            elif data == DIR:
                os.remove(path)
                os.makedirs(path)
            else:
                with open(path, "wb") as f:
                    f.write(data)
        glue_digest = tree_digest(glue)
        default_out, good = self.outs[task]
        target = out(glue, self.model) if out else default_out
        try:
            rc, err = self._run(glue, task, target, extra, dict_path)
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a crash
            OUTCOMES.append("crash")
            raise AssertionError(f"main raised {exc!r}") from exc
        lost = tree_digest(glue) != glue_digest or tree_digest(self.model) != self.model_digest
        if rc != 0 and os.path.isdir(default_out) and tree_digest(default_out) != good:
            lost = True
        lines = err.splitlines()
        if lost:
            verdict = "lost"
        elif rc == 2 and len(lines) == 1 and lines[0].startswith("prepare_glue: error: "):
            verdict = "clean-error"
        elif rc == 0 and lines == []:
            verdict = "accepted"
        else:
            verdict = "crash"
        return verdict, glue, rc, err

    def check_result(self, task: str, glue: str, drop_empty: bool) -> bool:
        """Whether the output of ``task`` holds exactly what :func:`reference` reads."""
        folder, splits, fields, _ = LAYOUTS[task]
        out = self.outs[task][0]
        for split, name in splits.items():
            path = os.path.join(glue, folder, name)
            data = open(path, "rb").read() if os.path.isfile(path) else None
            rows = reference(task, split, data, drop_empty)
            if rows is None:
                if os.path.exists(os.path.join(out, "index", f"{split}.txt")):
                    return False
                continue
            if read_index(out, split) != [r[0] for r in rows]:
                return False
            labels = load_labels(out, split)
            if split == "test":
                if labels is not None:
                    return False
            elif labels.tolist() != [r[3] for r in rows]:
                return False
            kinds = [("input0", 1)] + ([("input1", 2)] if "text_b" in fields else [])
            from fairseq.data import data_utils

            for kind, col in kinds:
                ds = data_utils.load_indexed_dataset(os.path.join(out, kind, split), self.d,
                                                     "mmap")
                got = [ds[i].tolist() for i in range(len(ds))]
                if got != encode_texts(self.tok, [r[col] or "" for r in rows]):
                    return False
        return True

    def restore(self, task: str) -> None:
        """Puts the good earlier output back after an accepted case replaced it."""
        out = self.outs[task][0]
        if tree_digest(out) != self.outs[task][1]:
            shutil.rmtree(out)
            assert self._run(self.pristine, task, out)[0] == 0
            assert tree_digest(out) == self.outs[task][1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(str(tmp_path_factory.mktemp("fuzz")))


def good(name: str) -> bytes:
    return GOOD[name].encode("utf-8")


def edit(name: str, old: str, new: str) -> bytes:
    assert old in GOOD[name], (name, old)
    return GOOD[name].replace(old, new, 1).encode("utf-8")


# (case id, task, {file: bytes or None}, extra args, out(glue, model) or None, dict maker or
#  None, expected: ("ok",) or ("error", "file:line" suffix or None, text in the message))
Case = Tuple[str, str, Dict[str, Optional[bytes]], tuple, Optional[Callable], Optional[Callable],
             tuple]
DIR = b"<a folder instead of the file>"


def _a_file(folder: str) -> str:
    path = os.path.join(folder, "file")
    with open(path, "w") as f:
        f.write("keep")
    return path


CR_FILE = (RTE_HEAD + "".join(f"{i}\tthe cat sat on the mat .\ta dog .\tentailment\n"
                              for i in range(300))).replace("\n", "\r").encode()
CATALOGUE: List[Case] = [
    ("tab in test sentence1", "RTE", {"RTE/test.tsv": edit("RTE/test.tsv", "the cat", "the\tcat")},
     (), None, None, ("error", "RTE/test.tsv:2", "4 fields, the layout allows 3")),
    ("tab in train sentence2", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "a dog ran",
                                                             "a dog\tran")},
     (), None, None, ("error", "RTE/train.tsv:2", "5 fields, the layout allows 4")),
    ("trailing tab on a dev row", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "entailment\n",
                                                              "entailment\t\n")},
     (), None, None, ("error", "RTE/dev.tsv:2", "5 fields")),
    ("trailing tab, drop-empty", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "entailment\n",
                                                             "entailment\t\n")},
     ("--extra-columns", "drop-empty"), None, None, ("ok",)),
    ("tab in test, drop-empty", "RTE", {"RTE/test.tsv": edit("RTE/test.tsv", "the cat",
                                                             "the\tcat")},
     ("--extra-columns", "drop-empty"), None, None, ("error", "RTE/test.tsv:2", "4 fields")),
    ("missing field", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "\ta mat", "")},
     (), None, None, ("error", "RTE/train.tsv:4", "3 column(s), expected at least 4")),
    ("unknown label", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "not_entailment", "neutral")},
     (), None, None, ("error", "RTE/dev.tsv:2", "unknown label 'neutral'")),
    ("label with spaces", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "\tnot_entailment",
                                                      "\t not_entailment ")},
     (), None, None, ("ok",)),
    ("dash label", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "\tentailment\n1", "\t-\n1")},
     (), None, None, ("error", "RTE/train.tsv:2", "unknown label '-'")),
    ("blank line inside", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "\n1\t", "\n\n1\t")},
     (), None, None, ("error", "RTE/train.tsv:3", "blank line inside")),
    ("trailing blank lines", "RTE", {"RTE/train.tsv": good("RTE/train.tsv") + b"\n\n\r\n"},
     (), None, None, ("ok",)),
    ("CRLF line ends", "RTE", {"RTE/dev.tsv": good("RTE/dev.tsv").replace(b"\n", b"\r\n")},
     (), None, None, ("ok",)),
    ("CR-only line ends", "RTE", {"RTE/train.tsv": CR_FILE},
     (), None, None, ("error", "RTE/train.tsv:1", "CR-only line ends? convert them")),
    ("BOM", "RTE", {"RTE/train.tsv": b"\xef\xbb\xbf" + good("RTE/train.tsv")},
     (), None, None, ("ok",)),
    ("invalid UTF-8", "RTE", {"RTE/dev.tsv": good("RTE/dev.tsv").replace(b"mat", b"m\xffat", 1)},
     (), None, None, ("error", "RTE/dev.tsv:2", "not UTF-8")),
    ("NUL inside a sentence", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "the mat",
                                                          "the\x00 mat")},
     (), None, None, ("ok",)),
    ("empty file", "RTE", {"RTE/dev.tsv": b""}, (), None, None,
     ("error", None, "dev.tsv: empty file")),
    ("header only", "RTE", {"RTE/dev.tsv": RTE_HEAD.encode()}, (), None, None,
     ("error", None, "header only, no examples")),
    ("renamed header column", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "sentence2",
                                                            "hypothesis")},
     (), None, None, ("error", "RTE/train.tsv:1", "header has no text_b column 'sentence2'")),
    ("header twice", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "\n1\t", "\n" + RTE_HEAD
                                                   + "1\t")},
     (), None, None, ("error", "RTE/train.tsv:3", "unknown label 'label'")),
    ("cut mid-row", "RTE", {"RTE/train.tsv": good("RTE/train.tsv")[:-len("\ta mat\tentailment\n")]},
     (), None, None, ("error", "RTE/train.tsv:4", "2 column(s)")),
    ("cut mid-label", "RTE", {"RTE/train.tsv": good("RTE/train.tsv")[:-5]},
     (), None, None, ("error", "RTE/train.tsv:4", "unknown label 'entail'")),
    ("no test file", "RTE", {"RTE/test.tsv": None}, (), None, None, ("ok",)),
    ("no train file", "RTE", {"RTE/train.tsv": None}, (), None, None,
     ("error", None, "train.tsv: file not found")),
    ("CoLA tab in sentence", "CoLA", {"CoLA/train.tsv": edit("CoLA/train.tsv", "cat the sat",
                                                             "cat\tthe sat")},
     (), None, None, ("error", "CoLA/train.tsv:2", "5 fields, the layout allows 4")),
    ("CoLA 3 fields", "CoLA", {"CoLA/dev.tsv": b"gj04\t0\tsat sat\n"}, (), None, None,
     ("error", "CoLA/dev.tsv:1", "3 column(s), expected at least 4")),
    ("CoLA label 2", "CoLA", {"CoLA/train.tsv": edit("CoLA/train.tsv", "gj04\t0", "gj04\t2")},
     (), None, None, ("error", "CoLA/train.tsv:2", "unknown label '2'")),
    ("CoLA with a header", "CoLA", {"CoLA/dev.tsv": b"source\tlabel\tstar\tsentence\n"
                                                    + good("CoLA/dev.tsv")},
     (), None, None, ("error", "CoLA/dev.tsv:1", "unknown label 'label'")),
    ("CoLA test tab", "CoLA", {"CoLA/test.tsv": edit("CoLA/test.tsv", "a cat", "a\tcat")},
     (), None, None, ("error", "CoLA/test.tsv:3", "3 fields, the layout allows 2")),
    ("STS-B nan", "STS-B", {"STS-B/train.tsv": edit("STS-B/train.tsv", "\t4.5", "\tnan")},
     (), None, None, ("error", "STS-B/train.tsv:2", "score 'nan' is not a finite number")),
    ("STS-B 1e999", "STS-B", {"STS-B/dev.tsv": edit("STS-B/dev.tsv", "\t3\n", "\t1e999\n")},
     (), None, None, ("error", "STS-B/dev.tsv:2", "score '1e999'")),
    ("STS-B empty score", "STS-B", {"STS-B/dev.tsv": edit("STS-B/dev.tsv", "\t3\n", "\t\n")},
     (), None, None, ("error", "STS-B/dev.tsv:2", "score '' is not a finite number")),
    ("STS-B 5.5 (warned)", "STS-B", {"STS-B/dev.tsv": edit("STS-B/dev.tsv", "\t3\n", "\t5.5\n")},
     (), None, None, ("ok",)),
    ("STS-B extra column", "STS-B", {"STS-B/train.tsv": edit("STS-B/train.tsv", "\t0.25",
                                                             "\t0.25\t1")},
     (), None, None, ("error", "STS-B/train.tsv:3", "11 fields, the layout allows 10")),
    ("unbalanced quotes", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "the mat", "\"the mat")},
     (), None, None, ("ok",)),
    ("10k-char label", "RTE", {"RTE/dev.tsv": edit("RTE/dev.tsv", "not_entailment", "y" * 10000)},
     (), None, None, ("error", "RTE/dev.tsv:2", "(10000 characters)")),
    ("header names padded", "RTE", {"RTE/train.tsv": edit("RTE/train.tsv", "sentence1",
                                                          " sentence1 ")},
     (), None, None, ("ok",)),
    ("a folder named test.tsv", "RTE", {"RTE/test.tsv": DIR}, (), None, None, ("ok",)),
    ("--dict model.pt", "RTE", {}, (), None, "checkpoint",
     ("error", None, "not a text dictionary but a zip archive")),
    ("--dict empty", "RTE", {}, (), None, "empty", ("error", None, "no symbols besides")),
    ("--dict vocab.txt", "RTE", {}, (), None, "vocab", ("error", None, "(a vocab.txt")),
    ("--dict of another model", "RTE", {}, (), None, "other",
     ("error", None, "are [UNK]")),
    ("--out is --glue-dir", "RTE", {}, (), lambda g, m: g, None,
     ("error", None, "is the input --glue-dir")),
    ("--out is the task folder", "RTE", {}, (), lambda g, m: os.path.join(g, "RTE"), None,
     ("error", None, "lies inside the input --glue-dir")),
    ("--out is the dict folder", "RTE", {}, (), lambda g, m: m, None,
     ("error", None, "contains the input --dict")),
    ("--out inside the GLUE folder", "RTE", {}, (), lambda g, m: os.path.join(g, "x", "y"),
     None, ("error", None, "lies inside the input --glue-dir")),
    ("--out holds the GLUE folder", "RTE", {}, (), lambda g, m: os.path.dirname(g), None,
     ("error", None, "contains the input --glue-dir")),
    ("--out is a file", "RTE", {}, (), lambda g, m: _a_file(os.path.dirname(g)), None,
     ("error", None, "exists and is not a directory")),
    ("--max-unk-rate 2", "RTE", {}, ("--max-unk-rate", "2"), None, None,
     ("error", None, "--max-unk-rate must lie in [0, 1]")),
]


def _dict_variant(world: World, kind: str) -> str:
    import torch

    folder = tempfile.mkdtemp(dir=world.base, prefix="dict-")
    path = os.path.join(folder, "dict.txt")
    if kind == "checkpoint":
        torch.save({"model": {}}, path)
    elif kind == "empty":
        open(path, "w").close()
    elif kind == "vocab":
        open(path, "w").write("\n".join(VOCAB) + "\n")
    elif kind == "other":
        dictionary_from_vocab(VOCAB[:5] + ["zebra", "okapi", "."]).save(path)
    return path


def _record(verdict: str, expected_ok: bool, correct: bool) -> str:
    if verdict in ("lost", "crash"):
        outcome = verdict
    elif verdict == "accepted":
        outcome = "correct" if expected_ok and correct else "wrong"
    else:
        outcome = "clean-error" if not expected_ok else "wrong"
    OUTCOMES.append(outcome)
    return outcome


@pytest.mark.parametrize("case", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_catalogue(world, case):
    name, task, files, extra, out, dict_kind, expected = case
    dict_path = _dict_variant(world, dict_kind) if dict_kind else None
    verdict, glue, rc, err = world.case(task, files, extra, out, dict_path)
    drop = "drop-empty" in extra
    correct = verdict == "accepted" and world.check_result(task, glue, drop)
    outcome = _record(verdict, expected[0] == "ok", correct)
    assert outcome in ("correct", "clean-error"), (outcome, rc, err)
    if expected[0] == "error":
        _, where, text = expected
        assert text in err, err
        if where is not None:
            assert f"{os.path.join(glue, where)}:" in err or f"{where}:" in err, err
        assert len(err) < 800  # capped
    world.restore(task)


# ------------------------------------------------------------------ generated mutations
NOISE = [b"\t", b"\n", b"\r", b"\r\n", b"\n\n", b"\xff", b"\xef\xbb\xbf", b'"', b" ", b"\x00",
         b"nan", b"-", b"entailment", b"0", b"1", b"5.5", b"\t\t", b"\ta"]
FILES = [name for name in GOOD]


@st.composite
def mutations(draw):
    name = draw(st.sampled_from(FILES))
    data = good(name)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "cut", "replace"]))
        if op == "insert":
            data = data[:at] + draw(st.sampled_from(NOISE)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 6)):]
        elif op == "cut":
            data = data[:at]
        else:
            data = data[:at] + draw(st.sampled_from(NOISE)) + data[at + 1:]
    drop = draw(st.booleans())
    return name, data, drop


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutations())
def test_generated_mutations_agree_with_the_reference(world, mutation):
    name, data, drop = mutation
    task = {"RTE": "RTE", "CoLA": "CoLA", "STS-B": "STS-B"}[name.split("/")[0]]
    split = {"train.tsv": "train", "dev.tsv": "valid", "test.tsv": "test"}[name.split("/")[1]]
    try:
        reference(task, split, data, drop)
        expected_ok, line = True, None
    except Refused as refused:
        expected_ok, line = False, refused.line
    extra = ("--extra-columns", "drop-empty") if drop else ()
    verdict, glue, rc, err = world.case(task, {name: data}, extra)
    correct = verdict == "accepted" and world.check_result(task, glue, drop)
    outcome = _record(verdict, expected_ok, correct)
    assert outcome in ("correct", "clean-error"), (outcome, data, rc, err)
    if not expected_ok and line is not None:
        assert f"{os.path.join(glue, name)}:{line}:" in err, (data, err)
    world.restore(task)


def test_table():
    """The table over every case above: cases tried, clean errors, crashes, silently wrong,
    lost data (run with -s to see it)."""
    counts = collections.Counter(OUTCOMES)
    print(f"\nprepare_glue fuzz: cases tried {len(OUTCOMES)}, clean errors "
          f"{counts['clean-error']}, correct results {counts['correct']}, crashes "
          f"{counts['crash']}, silently wrong {counts['wrong']}, lost data {counts['lost']}")
    assert counts["crash"] == counts["wrong"] == counts["lost"] == 0
    assert len(OUTCOMES) >= 30
