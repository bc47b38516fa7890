"""No command deletes or writes into its inputs, killed writes leave no
temporaries behind for good, and a dictionary that does not fit the data is refused."""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

from fairseq_crild.data.binarize import UnknownTokenError, prepare_task
from fairseq_crild.data.dictionary import dictionary_from_vocab, load_bert_dictionary
from fairseq_crild.outputs import (
    OutputExistsError,
    OutputOverlapsInputError,
    _writer_tag,
    atomic_output_dir,
    check_not_an_input,
    check_output_dir,
)
from tests.helpers_files import tree_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "a", "dog", "ran",
         ".", "on", "mat"]
RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)




@pytest.fixture
def env(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    dictionary_from_vocab(VOCAB).save(str(model / "dict.txt"))
    torch.save({"model": {}}, str(model / "model.pt"))
    write(str(model / "tokenizer_config.json"), '{"do_lower_case": true}')
    glue = tmp_path / "glue"
    write(str(glue / "RTE" / "train.tsv"), RTE_HEAD + "0\tthe cat sat .\ta dog ran .\tentailment\n"
                                                      "1\tthe dog\ta cat\tnot_entailment\n")
    write(str(glue / "RTE" / "dev.tsv"),
          RTE_HEAD + "2\tthe mat\ta cat sat on the mat\tentailment\n")
    write(str(glue / "RTE" / "test.tsv"), "index\tsentence1\tsentence2\n3\tthe cat\ta dog\n")
    return {"glue": str(glue), "model": str(model), "dict": str(model / "dict.txt"),
            "tmp": tmp_path}


# ------------------------------------------------------------------ outputs over inputs
def test_check_not_an_input_relations(tmp_path):
    glue = tmp_path / "glue"
    (glue / "RTE").mkdir(parents=True)
    (tmp_path / "glue2").mkdir()
    (tmp_path / "link").symlink_to(glue)
    inputs = {"--glue-dir": str(glue), "--dict": None}
    for out, how in [(glue, "is"), (tmp_path / "link", "is"), (tmp_path, "contains"),
                     (glue / "RTE", "lies inside"), (glue / "RTE" / "bin", "lies inside"),
                     (tmp_path / "link" / "x", "lies inside"), (f"{glue}/../glue", "is")]:
        with pytest.raises(OutputOverlapsInputError, match=f"--out .* {how} the input "
                                                           f"--glue-dir"):
            check_not_an_input(str(out), inputs)
    # a sibling sharing a prefix, an unrelated folder: fine
    check_not_an_input(str(tmp_path / "glue2"), inputs)
    check_not_an_input(str(tmp_path / "gluebin"), inputs)
    assert issubclass(OutputOverlapsInputError, ValueError)


@pytest.mark.parametrize("where", ["glue", "task", "dict folder", "inside glue", "parent"])
def test_prepare_refuses_an_output_over_its_inputs(env, capsys, where):
    from scripts.prepare_glue import main

    out = {"glue": env["glue"], "task": os.path.join(env["glue"], "RTE"),
           "dict folder": env["model"], "inside glue": os.path.join(env["glue"], "RTE", "bin"),
           "parent": str(env["tmp"])}[where]
    before = {k: tree_digest(env[k]) for k in ("glue", "model")}
    rc = main(["--glue-dir", env["glue"], "--task", "RTE", "--dict", env["dict"], "--out", out,
               "--overwrite", "--workers", "1"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("prepare_glue: error: --out ")
    assert " the input --" in err[0]
    assert {k: tree_digest(env[k]) for k in ("glue", "model")} == before  # nothing deleted
    assert not os.path.exists(os.path.join(env["glue"], "RTE", "bin"))


def test_other_commands_refuse_an_output_over_their_inputs(env, capsys, tmp_path):
    from scripts.convert_hf_bert import main as convert
    from scripts.export_hf_bert import main as export_hf_bert
    from scripts.export_hf_classifier import main as export_hf_classifier
    from scripts.export_onnx import main as export_onnx
    from scripts.prepare_glue_roberta import main as prepare_roberta
    from tests.helpers_bert import make_tiny_hf_folder

    hf = make_tiny_hf_folder(str(tmp_path / "hf"))
    ckpt = os.path.join(env["model"], "model.pt")
    data = str(tmp_path / "data")
    os.makedirs(data)
    write(os.path.join(data, "meta.json"), "{}")
    before = {p: tree_digest(p) for p in (hf, env["model"], env["glue"], data)}
    capsys.readouterr()  # transformers' progress bars while saving the tiny model
    runs = [
        (convert, [hf, hf, "--overwrite"], "OUT_DIR", "is the input HF_DIR"),
        (convert, [hf, str(tmp_path), "--overwrite"], "OUT_DIR", "contains the input HF_DIR"),
        (export_hf_bert, [ckpt, env["model"], "--overwrite"], "OUT_DIR",
         "contains the input CHECKPOINT"),
        (export_hf_classifier, [ckpt, data, "--data", data, "--overwrite"], "OUT_DIR",
         "is the input --data"),
        (export_hf_classifier, [ckpt, env["model"], "--overwrite"], "OUT_DIR",
         "contains the input CHECKPOINT"),
        (export_onnx, [ckpt, ckpt, "--overwrite"], "OUT", "is the input CHECKPOINT"),
        (export_onnx, [ckpt, os.path.join(data, "m.onnx"), "--data", data], "OUT",
         "lies inside the input --data"),
        (prepare_roberta, ["--glue-dir", env["glue"], "--task", "RTE", "--bpe", "none",
                           "--dict", env["dict"], "--out", env["glue"], "--overwrite"], "--out",
         "is the input --glue-dir"),
    ]
    for main, argv, flag, how in runs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"error: {flag} " in err[0] and how in err[0], (argv, err)
    assert {p: tree_digest(p) for p in before} == before


def test_pipeline_refuses_an_out_over_its_inputs(env, capsys):
    from scripts.run_pipeline import main

    before = tree_digest(env["glue"])
    for out in (env["glue"], str(env["tmp"]), os.path.join(env["glue"], "RTE", "runs")):
        rc = main(["--task", "RTE", "--method", "cr_ild", "--glue-dir", env["glue"], "--out",
                   out, "--budget", "smoke", "--device", "cpu"])
        err = capsys.readouterr().err.splitlines()
        assert rc != 0 and len(err) == 1 and "the input --glue-dir" in err[0], err
    # a --teacher inside a folder the pipeline rebuilds with --overwrite
    out = str(env["tmp"] / "pipe")
    teacher = os.path.join(out, "base", "teacher.pt")
    write(teacher, "x")
    rc = main(["--task", "RTE", "--method", "cr_ild", "--glue-dir", env["glue"], "--out", out,
               "--teacher", teacher, "--device", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert rc != 0 and "contains the input --teacher" in err[0], err
    assert tree_digest(env["glue"]) == before and sorted(os.listdir(out)) == ["base"]


# ------------------------------------------------------------ temporaries of killed writers
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tag(pid: int) -> str:
    return _writer_tag().rsplit("-", 1)[0] + f"-{pid}"


def test_stale_temporaries_are_cleaned_live_ones_kept(tmp_path, caplog):
    out = tmp_path / "out"
    dead = _dead_pid()
    names = {"legacy": "out.tmp-abcd_123", "dead": f"out.tmp-{_tag(dead)}-zz9_abcd",
             "dead_old": f"out.old-{_tag(dead)}-zz9_abce",
             "live": f"out.tmp-{_tag(os.getpid())}-zz9_abcf",
             "other_host": f"out.tmp-0000beef-{dead}-zz9_abcg",
             "user": "out.tmp-mine", "other_output": f"out2.tmp-{_tag(dead)}-zz9_abch"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    out.mkdir()
    (out / "result").write_text("kept")
    with caplog.at_level(logging.WARNING, logger="fairseq_crild.outputs"):
        with pytest.raises(OutputExistsError):
            check_output_dir(str(out), overwrite=False)
    left = set(os.listdir(tmp_path))
    assert left == {"out", names["live"], names["other_host"], names["user"],
                    names["other_output"]}
    assert (out / "result").read_text() == "kept"
    assert sum("left by an interrupted write" in r.message for r in caplog.records) == 3


def test_kill_between_the_renames_restores_the_previous_results(tmp_path):
    """A replacement killed after moving the old folder aside and before moving the new one
    in: the next run puts the old results back (then refuses them without --overwrite)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "result").write_text("previous")
    code = f"""
import os, signal, sys
sys.path.insert(0, {ROOT!r})
from tests.helpers_bert import load_pure_module
outputs = load_pure_module("outputs")
real = os.replace
calls = []
def replace(a, b):
    calls.append(a)
    real(a, b)
    if len(calls) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
outputs.os.replace = replace
with outputs.atomic_output_dir({str(out)!r}, overwrite=True) as tmp:
    open(os.path.join(tmp, "result"), "w").write("new")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and len(os.listdir(tmp_path)) == 2  # .old-* and .tmp-*
    with pytest.raises(OutputExistsError):
        check_output_dir(str(out), overwrite=False)
    assert os.listdir(tmp_path) == ["out"] and (out / "result").read_text() == "previous"
    with atomic_output_dir(str(out), overwrite=True) as tmp:
        write(os.path.join(tmp, "result"), "new")
    assert os.listdir(tmp_path) == ["out"] and (out / "result").read_text() == "new"


def test_prepare_after_a_sigkill_mid_write_leaves_no_temporary(env):
    out = str(env["tmp"] / "bin")
    code = f"""
import os, signal, sys
sys.path.insert(0, {ROOT!r})
import fairseq_crild.data.binarize as b
real = b.write_label_dataset
def killed(*a):
    os.kill(os.getpid(), signal.SIGKILL)
b.write_label_dataset = killed
b.prepare_task({env['glue']!r}, "RTE", {env['dict']!r}, {out!r}, workers=1)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [n for n in os.listdir(env["tmp"]) if n.startswith("bin.tmp-")]
    prepare_task(env["glue"], "RTE", env["dict"], out, workers=1)
    assert sorted(os.listdir(env["tmp"])) == ["bin", "glue", "model"]


# ------------------------------------------------------------------ dictionaries
def _hand_unk_rate(texts, known):
    """Share of whitespace/punctuation pieces outside ``known`` (every word here is one
    WordPiece when known, one [UNK] when not: no '##' pieces in VOCAB)."""
    import re

    pieces = [p for t in texts for p in re.findall(r"\w+|[^\w\s]", t.lower())]
    return sum(p not in known for p in pieces) / len(pieces), len(pieces)


def test_a_dictionary_that_leaves_the_data_unknown_is_refused(env):
    out = str(env["tmp"] / "bin")
    prepare_task(env["glue"], "RTE", env["dict"], out, workers=1)
    before = tree_digest(out)
    small = str(env["tmp"] / "small" / "dict.txt")
    os.makedirs(os.path.dirname(small))
    known = ["the", "cat", "."]
    dictionary_from_vocab(VOCAB[:5] + known).save(small)
    texts = ["the cat sat .", "the dog", "the mat", "the cat", "a dog ran .", "a cat",
             "a cat sat on the mat", "a dog"]
    rate, n = _hand_unk_rate(texts[:2] + texts[4:6], set(known))  # the sample: train
    with pytest.raises(UnknownTokenError) as err:
        prepare_task(env["glue"], "RTE", small, out, overwrite=True, workers=1)
    msg = str(err.value)
    assert f"{rate:.1%} of the word pieces of the first 2 examples of train" in msg
    assert f"({round(rate * n)} of {n};" in msg and "--max-unk-rate 0.05" in msg
    assert "\n" not in msg and tree_digest(out) == before
    # accepted on request; meta.json holds the rate over every split (hand-computed)
    meta = prepare_task(env["glue"], "RTE", small, str(env["tmp"] / "ok"), workers=1,
                        max_unk_rate=1.0)
    assert meta["unk_rate"] == pytest.approx(_hand_unk_rate(texts, set(known))[0], abs=1e-12)


def test_unknown_words_beyond_the_sample_are_caught_before_the_folder_appears(env):
    """The train sample fits, test does not: the full count refuses before the move."""
    write(os.path.join(env["glue"], "RTE", "test.tsv"),
          "index\tsentence1\tsentence2\n" + "".join(f"{i}\tzebra giraffe\tokapi\n"
                                                    for i in range(20)))
    out = str(env["tmp"] / "bin")
    # train+dev: 22 pieces, all known; test: 60 unknown ones
    with pytest.raises(UnknownTokenError, match=r"of the data are \[UNK\] \(60 of 80; "
                                                r"worst test input0: 100.0%\)"):
        prepare_task(env["glue"], "RTE", env["dict"], out, workers=1)
    assert sorted(os.listdir(env["tmp"])) == ["glue", "model"]


@pytest.mark.parametrize("kind,expected", [
    ("checkpoint", "not a text dictionary but a zip archive (a PyTorch checkpoint"),
    ("pickle", "not a text dictionary but a pickle"),
    ("binary", "not a text dictionary but a binary file"),
    ("latin1", "not a text dictionary: not UTF-8"),
    ("vocab.txt", "line 1 is not '<symbol> <count>' (a vocab.txt"),
    ("cut", "line 10 is not '<symbol> <count>'"),
    ("empty", "no symbols besides [CLS], [PAD], [SEP], [UNK]"),
    ("edited", "not the vocabulary that convert_hf_bert.py wrote next to it "
               "(tokenizer_config.json: 9 symbols"),
])
def test_a_file_that_is_not_the_dictionary_is_refused_in_one_line(env, capsys, kind, expected):
    from scripts.prepare_glue import main

    path = str(env["tmp"] / "d" / "dict.txt")
    os.makedirs(os.path.dirname(path))
    text = open(env["dict"], "rb").read()
    if kind == "checkpoint":
        torch.save({"model": {}}, path)
    elif kind == "pickle":
        torch.save({"model": {}}, path, _use_new_zipfile_serialization=False)
    elif kind == "binary":
        open(path, "wb").write(b"abc 1\n\x00\x01\x02")
    elif kind == "latin1":
        open(path, "wb").write("caf\u00e9 1\n".encode("latin-1") + b"x" * 100)
    elif kind == "vocab.txt":
        open(path, "w").write("\n".join(VOCAB) + "\n")
    elif kind == "cut":
        open(path, "wb").write(text[:-3])  # the last line loses its count
    elif kind == "empty":
        open(path, "w").close()
    elif kind == "edited":  # a dict.txt that is not the one convert_hf_bert.py wrote
        d = dictionary_from_vocab(VOCAB[:9])
        d.save(path)
        from fairseq_crild.data.dictionary import vocab_fingerprint

        full = dictionary_from_vocab(VOCAB[:5] + ["x", "y", "z", "w"])
        write(os.path.join(os.path.dirname(path), "tokenizer_config.json"), json.dumps(
            {"do_lower_case": True, "crild_vocab_size": len(full),
             "crild_vocab_sha256": vocab_fingerprint(full)}))
    rc = main(["--glue-dir", env["glue"], "--task", "RTE", "--dict", path, "--out",
               str(env["tmp"] / "out"), "--workers", "1"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert err[0].startswith(f"prepare_glue: error: --dict {path}")
    assert not os.path.exists(env["tmp"] / "out")
    if kind in ("checkpoint", "vocab.txt"):  # every other loader gets the same one line
        with pytest.raises(ValueError, match="pass the dict.txt written by convert_hf_bert"):
            load_bert_dictionary(path)


def test_converted_folder_records_its_vocabulary(env, tmp_path):
    from scripts.convert_hf_bert import main as convert
    from tests.helpers_bert import make_tiny_hf_folder

    out = str(tmp_path / "conv")
    assert convert([make_tiny_hf_folder(str(tmp_path / "hf")), out]) == 0
    d = load_bert_dictionary(os.path.join(out, "dict.txt"))
    from fairseq_crild.data.dictionary import vocab_fingerprint

    cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    assert cfg["crild_vocab_size"] == len(d) and cfg["crild_vocab_sha256"] == \
        vocab_fingerprint(d)
