"""prepare_glue: binarised contents, lower-casing, and never clobbering existing outputs."""

import hashlib
import os

import pytest
from fairseq.data import data_utils

from fairseq_crild.data.glue_binarize import prepare_task
from fairseq_crild.data.glue_formats import GlueFormatError
from fairseq_crild.dictionary import dictionary_from_vocab
from fairseq_crild.outputs import OutputExistsError
from tests.conftest import run_script

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "a", "dog", "ran",
         ".", "run", "##s", "The", "Cat"]


@pytest.fixture
def setup(tmp_path):
    d = dictionary_from_vocab(VOCAB)
    dict_path = tmp_path / "dict.txt"
    d.save(str(dict_path))
    glue = tmp_path / "glue"
    (glue / "RTE").mkdir(parents=True)
    head = "index\tsentence1\tsentence2\tlabel\n"
    (glue / "RTE" / "train.tsv").write_text(
        head + "0\tThe Cat sat.\ta dog runs\tentailment\n1\tthe cat\tzebra ran\tnot_entailment\n")
    (glue / "RTE" / "dev.tsv").write_text(head + "5\tthe dog\tthe cat\tnot_entailment\n")
    (glue / "RTE" / "test.tsv").write_text("index\tsentence1\tsentence2\n9\tcat\tdog\n")
    (glue / "STS-B").mkdir()
    sts = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (glue / "STS-B" / "train.tsv").write_text(sts + "0\tg\tf\ty\to\ts\ts\tthe cat\ta dog\t3.25\n")
    (glue / "STS-B" / "dev.tsv").write_text(sts + "0\tg\tf\ty\to\ts\ts\tcat\tdog\t1.5\n")
    return d, str(dict_path), str(glue), tmp_path


def _tokens(out, kind, split, d):
    ds = data_utils.load_indexed_dataset(os.path.join(out, kind, split), None, "mmap")
    return [[d[i] for i in ds[j].tolist()] for j in range(len(ds))]


def _labels(out, split):
    if os.path.isfile(os.path.join(out, "label", split + ".label")):
        return [float(x) for x in open(os.path.join(out, "label", split + ".label"))]
    ds = data_utils.load_indexed_dataset(os.path.join(out, "label", split), None, "mmap")
    return [ds[j].item() for j in range(len(ds))]


def test_rte_binarised_lowercased(setup):
    d, dict_path, glue, tmp = setup
    out = str(tmp / "bin")
    meta = prepare_task(glue, "rte", dict_path, out)
    assert meta["splits"] == {"train": 2, "valid": 1, "test": 1} and meta["num_classes"] == 2
    assert _tokens(out, "input0", "train", d) == [["the", "cat", "sat", "."], ["the", "cat"]]
    assert _tokens(out, "input1", "train", d) == [["a", "dog", "run", "##s"], ["[UNK]", "ran"]]
    assert _labels(out, "train") == [0, 1] and _labels(out, "valid") == [1]
    assert not os.path.exists(os.path.join(out, "label", "test.bin"))
    assert open(os.path.join(out, "index", "test.txt")).read() == "9\n"


def test_cased_and_regression(setup):
    d, dict_path, glue, tmp = setup
    out = str(tmp / "cased")
    prepare_task(glue, "RTE", dict_path, out, lowercase=False)
    assert _tokens(out, "input0", "train", d)[0] == ["The", "Cat", "sat", "."]
    out = str(tmp / "sts")
    meta = prepare_task(glue, "sts-b", dict_path, out)
    assert meta["regression"] and _labels(out, "train") == [3.25] and meta["metrics"] == [
        "pearson", "spearman"]


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            h.update(name.encode())
            h.update(open(os.path.join(root, name), "rb").read())
    return h.hexdigest()


def test_existing_output_is_never_clobbered(setup):
    d, dict_path, glue, tmp = setup
    out = str(tmp / "bin")
    prepare_task(glue, "RTE", dict_path, out)
    before = _digest(out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_task(glue, "RTE", dict_path, out)
    # a malformed file fails before anything is written, even with --overwrite
    with open(os.path.join(glue, "RTE", "dev.tsv"), "a") as f:
        f.write("6\tbroken row\n")
    with pytest.raises(GlueFormatError, match=r"dev.tsv:3:"):
        prepare_task(glue, "RTE", dict_path, out, overwrite=True)
    assert _digest(out) == before
    with pytest.raises(GlueFormatError):
        prepare_task(glue, "RTE", dict_path, str(tmp / "fresh"))
    assert not os.path.exists(tmp / "fresh")
    assert [p for p in os.listdir(tmp) if ".tmp-" in p] == []


def test_script_errors_are_one_line(setup):
    d, dict_path, glue, tmp = setup
    with open(os.path.join(glue, "RTE", "train.tsv"), "a") as f:
        f.write("7\ta\tb\tperhaps\n")
    proc = run_script("scripts/prepare_glue.py", "--glue-dir", glue, "--task", "RTE", "--dict",
                      dict_path, "--out", str(tmp / "x"), check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "train.tsv:4: unknown label 'perhaps'" in lines[0]
    assert "Traceback" not in proc.stderr and not os.path.exists(tmp / "x")
