"""scripts/classify.py on ordinary bad input: one line naming the input and the fix, exit
status 2, never a traceback; good input still classified."""

import io
import os
import subprocess
import sys

import pytest
import torch

from fairseq_crild.cli import classify
from tests.conftest import ROOT
from tests.test_fairseq_train import teacher  # noqa: F401  (fixture: a fine-tuned tiny BERT)

PAIR = ("The cat sat on the mat.", "A cat is on a mat.")


def _run(monkeypatch, capsys, argv, stdin: bytes = b""):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = classify.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(tiny_env, teacher, monkeypatch, capsys):  # noqa: F811
    def run(*extra, stdin: bytes = b"", checkpoint=None):
        argv = [checkpoint or teacher, "--data", tiny_env["data"], *extra]
        return _run(monkeypatch, capsys, argv, stdin)
    return run


def _one_error_line(code, out, err, *words):
    assert code == 2, (code, out, err)
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("classify: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("stdin, words", [
    (b"", ["<stdin>", "no examples"]),
    (b"\n\n   \n\t\n", ["<stdin>", "no examples"]),
    (b"a\tb\n\xff\xfe bad\tbytes\n", ["<stdin>:2", "not UTF-8", "0xff"]),
    (f"{PAIR[0]}\t{PAIR[1]}\nonly one sentence\n".encode(), ["<stdin>:2", "one sentence",
                                                            "RTE", "tab"]),
    (b"\n\na\tb\tc\n", ["<stdin>:3", "3 tab-separated fields"]),
])
def test_bad_stdin_gives_one_line(cli, stdin, words):
    _one_error_line(*cli(stdin=stdin), *words)


@pytest.mark.parametrize("size", ["0", "-1"])
def test_bad_batch_size(cli, size):
    _one_error_line(*cli("--batch-size", size, "--pair", *PAIR), f"--batch-size {size}",
                    "positive")


def test_input_folder_missing_file_and_single_sentence_on_pair_task(cli, tmp_path):
    _one_error_line(*cli("--input", tmp_path), str(tmp_path), "folder")
    _one_error_line(*cli("--input", tmp_path / "nope.tsv"), "nope.tsv")
    _one_error_line(*cli("--sentence", "one sentence only"), "RTE classifies sentence pairs",
                    "--pair")


@pytest.mark.parametrize("content, words", [
    (b"PK\x03\x04 not really a zip", ["bad.pt", "truncated or not a torch checkpoint"]),
    (b"", ["bad.pt", "truncated"]),
    (b"plain text, not a checkpoint\n", ["bad.pt", "not a torch checkpoint"]),
    (None, ["bad.pt", "holds an object of type Tensor"]),
])
def test_unreadable_checkpoints(cli, tmp_path, content, words):
    bad = tmp_path / "bad.pt"
    if content is None:
        torch.save(torch.ones(2), bad)
    else:
        bad.write_bytes(content)
    _one_error_line(*cli("--pair", *PAIR, checkpoint=bad), *words)


def test_truncated_and_pickled_callable_checkpoints(cli, teacher, tmp_path):  # noqa: F811
    cut = tmp_path / "cut.pt"
    data = teacher.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _one_error_line(*cli("--pair", *PAIR, checkpoint=cut), "cut.pt")
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "hook": print}, evil)
    _one_error_line(*cli("--pair", *PAIR, checkpoint=evil), "evil.pt", "print")
    _one_error_line(*cli("--pair", *PAIR, checkpoint=tmp_path), "checkpoint_best.pt")


def test_missing_data_folder(tiny_env, teacher, monkeypatch, capsys, tmp_path):  # noqa: F811
    argv = [teacher, "--data", tmp_path / "no-such-folder", "--pair", *PAIR]
    _one_error_line(*_run(monkeypatch, capsys, argv), "no-such-folder")


def test_good_input_with_crlf_blank_lines_and_utf8(cli):
    lines = [f"{PAIR[0]}\t{PAIR[1]}", "Ünïcödé café sentence.\tAnother — one.", PAIR[0] + "\t"]
    stdin = ("\r\n\r\n".join(lines) + "\r\n").encode("utf-8")
    code, out, err = cli(stdin=stdin)
    assert code == 0, err
    got = out.splitlines()
    assert len(got) == 3 and set(got) <= {"entailment", "not_entailment"}
    code, out2, _ = cli("--pair", *PAIR, "--pair", "Ünïcödé café sentence.", "Another — one.",
                        "--probs", "--batch-size", "1")
    assert code == 0 and [ln.split("\t")[0] for ln in out2.splitlines()] == got[:2]
    probs = [float(f.split("=")[1]) for f in out2.splitlines()[0].split("\t")[1:]]
    assert len(probs) == 2 and abs(sum(probs) - 1) < 1e-3


def test_head_closing_the_pipe_is_quiet(tiny_env, teacher):  # noqa: F811
    """``classify.py ... | head -1``: the reader leaves after one line; no traceback."""
    stdin = "".join(f"{PAIR[0]} {i}\t{PAIR[1]}\n" for i in range(3000)).encode()
    proc = subprocess.Popen([sys.executable, "scripts/classify.py", str(teacher), "--data",
                             str(tiny_env["data"]), "--probs"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    proc.stdin.write(stdin)
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()  # as head -1 does: > 64 KiB of output remain unwritten
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.split(b"\t")[0] in (b"entailment", b"not_entailment")
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]
    assert proc.returncode == classify.EXIT_BROKEN_PIPE
