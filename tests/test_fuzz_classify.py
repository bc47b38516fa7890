"""A fuzz suite that stays, for classify.py: 40 seeded malformed or
unusual variants of a valid TSV on stdin. Each must give exactly what an independent reading
of the documented rules says: one ``classify: error:`` line naming ``<stdin>:LINE`` and exit
status 2, or exit 0 with one prediction per example equal to the hub's prediction of the
pairs that reading finds. The checkpoint and data folder stay byte-identical."""

import io
import random
import sys

import pytest

from fairseq_crild.cli import classify
from tests.helpers_files import tree_digest
from tests.test_fairseq_train import teacher  # noqa: F401  (fixture: a fine-tuned tiny BERT)

ROWS = [("The cat sat on the mat.", "A cat is on a mat."),
        ("He did not go to school today.", "He went to school today."),
        ("Paris is the capital of France.", "France has a capital."),
        ("The dog runs in the park every morning.", "The dog sleeps all day.")]
JUNK = [b"\t", b"\r", b"\r\n", b"\n", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"   ",
        "\u00e9t\u00e9 \U0001F600".encode(), b"\\t", b"\t\t", b"\x0b", b"\x1b[31m"]


def _valid_tsv(rows) -> bytes:
    return "".join(f"{a}\t{b}\n" for a, b in rows).encode()


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits: insert junk, delete a span, duplicate or drop a line,
    stretch a line to thousands of words."""
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["insert", "insert", "delete", "dup", "drop", "long"])
        if kind == "insert" or not data:
            at = rng.randint(0, len(data))
            data = data[:at] + rng.choice(JUNK) + data[at:]
        elif kind == "delete":
            at = rng.randrange(len(data))
            data = data[:at] + data[at + rng.randint(1, 6):]
        else:
            lines = data.split(b"\n")
            i = rng.randrange(len(lines))
            if kind == "dup":
                lines.insert(i, lines[i])
            elif kind == "drop":
                del lines[i]
            else:
                lines[i] = lines[i] + b" word" * rng.randint(300, 3000)
            data = b"\n".join(lines)
    return data


def _expected(data: bytes):
    """The documented rules, read independently: lines end at \\n, a trailing \\r\\n / \\r
    is dropped, blank lines are skipped; every line must be UTF-8 with at most one tab (the
    first line that is not is named), then every example must hold two sentences, RTE being
    a pair task (the first one that does not is named). Returns ('error', line number or
    None for no examples at all) or ('ok', pairs)."""
    rows = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "error", number
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            return "error", number
        rows.append((number, fields))
    if not rows:
        return "error", None
    for number, fields in rows:
        if len(fields) != 2:
            return "error", number
    return "ok", [(a, b) for _, (a, b) in rows]


CASES = []
_rng = random.Random(17)
for _ in range(40):
    CASES.append(_mutate(_rng, _valid_tsv(_rng.sample(ROWS, _rng.randint(1, len(ROWS))))))


@pytest.fixture(scope="module")
def hub_labels(tiny_env, teacher):  # noqa: F811
    from fairseq_crild.export.hub import GlueClassifier

    clf = GlueClassifier.from_pretrained(teacher, data_name_or_path=str(tiny_env["data"]))
    return lambda pairs: [clf.labels[i] for i in clf.logits(pairs, 32).argmax(-1).tolist()]


def test_the_generator_covers_both_outcomes():
    outcomes = [_expected(d)[0] for d in CASES]
    assert outcomes.count("error") >= 10 and outcomes.count("ok") >= 10, outcomes


@pytest.mark.parametrize("case", range(len(CASES)))
def test_malformed_stdin_gives_a_clean_error_or_the_right_result(
        case, tiny_env, teacher, hub_labels, monkeypatch, capsys):  # noqa: F811
    data = CASES[case]
    before = tree_digest(teacher, tiny_env["data"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code = classify.main([str(teacher), "--data", str(tiny_env["data"])])
    out, err = capsys.readouterr()
    kind, detail = _expected(data)
    assert "Traceback" not in err
    if kind == "error":
        assert code == 2 and out == "", (data[:200], code, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("classify: error: <stdin>"), err
        if detail is not None:
            assert f"<stdin>:{detail}:" in lines[0], (detail, lines[0])
        assert len(lines[0]) < 1000
    else:
        assert code == 0, (data[:200], err)
        assert out.splitlines() == hub_labels(detail), data[:200]
    assert tree_digest(teacher, tiny_env["data"]) == before
