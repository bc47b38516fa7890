"""prepare_glue: binarised contents, lower-casing, and never clobbering existing outputs."""

import hashlib
import json
import os

import numpy as np
import pytest
from fairseq.data import data_utils

from fairseq_crild.data.binarize import load_labels, prepare_task, read_index
from fairseq_crild.data.dictionary import dictionary_from_vocab
from fairseq_crild.data.glue_tasks import GlueFormatError
from fairseq_crild.data.tokenization import build_tokenizer, encode_texts
from fairseq_crild.outputs import OutputExistsError
from tests.conftest import run_script
from tests.helpers_files import tree_digest

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "a", "dog", "ran",
         ".", "run", "##s", "The", "Cat", "cafe", "Café", "!", "?", "is"]
RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"
# fairseq's mmap reader hands out read-only buffers; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
STSB_HEAD = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
             "\tscore\n")


def prepare(*args, **kwargs):
    """prepare_task on the tiny fixtures below, which hold unknown words on purpose (zebra,
    '"'): the [UNK] guard is tested on its own in tests/test_output_guards.py."""
    kwargs.setdefault("max_unk_rate", 1.0)
    return prepare_task(*args, **kwargs)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


@pytest.fixture
def env(tmp_path):
    d = dictionary_from_vocab(VOCAB)
    dict_path = str(tmp_path / "model" / "dict.txt")
    os.makedirs(os.path.dirname(dict_path))
    d.save(dict_path)
    glue = str(tmp_path / "glue")
    write(f"{glue}/RTE/train.tsv", RTE_HEAD + "0\tThe Cat sat.\ta dog runs\tentailment\n"
                                              "1\tthe cat\tzebra ran\tnot_entailment\n")
    write(f"{glue}/RTE/dev.tsv", RTE_HEAD + "5\tthe dog\tthe \"cat\tnot_entailment\n")
    write(f"{glue}/RTE/test.tsv", "index\tsentence1\tsentence2\n9\tcat\tdog\n10\tCafé!\t\n")
    write(f"{glue}/STS-B/train.tsv", STSB_HEAD + "0\tg\tf\ty\to\ts\ts\tthe cat\ta dog\t3.25\n"
                                                 "1\tg\tf\ty\to\ts\ts\tcat\tcat\t0.1\n")
    write(f"{glue}/STS-B/dev.tsv", STSB_HEAD + "0\tg\tf\ty\to\ts\ts\tcat\tdog\t1.5\n")
    write(f"{glue}/CoLA/train.tsv", "gj04\t1\t\tThe cat ran.\ngj04\t0\t*\tcat the ran\n")
    write(f"{glue}/CoLA/dev.tsv", "gj04\t0\t*\tsat sat\n")
    return d, dict_path, glue, tmp_path


def tokens(out, kind, split, d):
    ds = data_utils.load_indexed_dataset(os.path.join(out, kind, split), d, "mmap")
    return [[d[i] for i in ds[j].tolist()] for j in range(len(ds))]


def test_rte_binarised_lowercased(env):
    d, dict_path, glue, tmp = env
    out = str(tmp / "bin")
    meta = prepare(glue, "rte", dict_path, out)
    assert meta["splits"] == {"train": 2, "valid": 1, "test": 2}
    assert meta["task"] == "RTE" and meta["num_classes"] == 2 and meta["lowercase"] is True
    assert meta["label_names"] == ["entailment", "not_entailment"]
    assert meta["main_metric"] == "accuracy" and meta["labelled_splits"] == ["train", "valid"]
    assert tokens(out, "input0", "train", d) == [["the", "cat", "sat", "."], ["the", "cat"]]
    assert tokens(out, "input1", "train", d) == [["a", "dog", "run", "##s"], ["[UNK]", "ran"]]
    assert tokens(out, "input1", "valid", d) == [["the", "[UNK]", "cat"]]  # '"' not in vocab
    assert tokens(out, "input0", "test", d) == [["cat"], ["cafe", "!"]]  # accent stripped
    assert tokens(out, "input1", "test", d) == [["dog"], []]  # an empty sentence stays empty
    # labels: int64 class indices, readable by fairseq's own loader too
    ds = data_utils.load_indexed_dataset(os.path.join(out, "label", "train"), None, "mmap")
    assert [ds[i].tolist() for i in range(len(ds))] == [[0], [1]]
    assert load_labels(out, "train").dtype == np.int64
    assert load_labels(out, "valid").tolist() == [1]
    assert load_labels(out, "test") is None
    assert not os.path.exists(os.path.join(out, "label", "test.bin"))
    assert read_index(out, "test") == ["9", "10"] and read_index(out, "valid") == ["5"]
    for kind in ("input0", "input1"):
        with open(os.path.join(out, kind, "dict.txt"), "rb") as a, open(dict_path, "rb") as b:
            assert a.read() == b.read()
    with open(os.path.join(out, "meta.json"), encoding="utf-8") as f:
        assert json.load(f) == meta
    with open(os.path.join(glue, "RTE", "dev.tsv"), "rb") as f:
        assert meta["sources"]["valid"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    with open(dict_path, "rb") as f:
        assert meta["dict_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert meta["vocab_size"] == len(d) and meta["missing_splits"] == []
    # [UNK]s: 'zebra' (train input1) and '"' (valid input1) of 21 word pieces, counted above
    assert meta["unk_rate"] == 2 / 21
    assert sorted(os.listdir(tmp)) == ["bin", "glue", "model"]  # no temporary folders left


def test_cased(env):
    d, dict_path, glue, tmp = env
    out = str(tmp / "cased")
    meta = prepare(glue, "RTE", dict_path, out, lowercase=False, workers=1)
    assert meta["lowercase"] is False
    assert tokens(out, "input0", "train", d)[0] == ["The", "Cat", "sat", "."]
    assert tokens(out, "input0", "test", d)[1] == ["Café", "!"]


def test_lowercase_follows_tokenizer_config(env):
    d, dict_path, glue, tmp = env
    write(os.path.join(os.path.dirname(dict_path), "tokenizer_config.json"),
          '{"do_lower_case": false}')
    meta = prepare(glue, "RTE", dict_path, str(tmp / "auto"))
    assert meta["lowercase"] is False
    assert tokens(str(tmp / "auto"), "input0", "train", d)[0] == ["The", "Cat", "sat", "."]


def test_regression_and_single_sentence(env):
    d, dict_path, glue, tmp = env
    out = str(tmp / "sts")
    meta = prepare(glue, "sts-b", dict_path, out)
    assert meta["regression"] and meta["num_classes"] == 1 and meta["label_dtype"] == "float64"
    assert meta["metrics"] == ["pearson", "spearman"] and meta["main_metric"] == "pearson"
    assert meta["missing_splits"] == ["test"] and "test" not in meta["splits"]
    values = load_labels(out, "train")
    assert values.dtype == np.float64 and values.tolist() == [3.25, 0.1]
    with open(os.path.join(out, "label", "train.label"), encoding="utf-8") as f:
        assert [float(x) for x in f] == [3.25, 0.1]
    assert tokens(out, "input1", "train", d) == [["a", "dog"], ["cat"]]

    out = str(tmp / "cola")
    meta = prepare(glue, "CoLA", dict_path, out)
    assert meta["is_pair"] is False and meta["main_metric"] == "mcc"
    assert sorted(os.listdir(out)) == ["index", "input0", "label", "meta.json"]
    assert tokens(out, "input0", "train", d) == [["the", "cat", "ran", "."],
                                                 ["cat", "the", "ran"]]
    assert load_labels(out, "train").tolist() == [1, 0] and read_index(out, "valid") == ["0"]


def test_mnli_mismatched_splits(env):
    d, dict_path, glue, tmp = env
    from tests.test_glue_readers import FIXTURES

    files, _ = FIXTURES["MNLI"]
    for name, text in files.items():
        write(os.path.join(glue, "MNLI", name), text)
    out = str(tmp / "mnli")
    meta = prepare(glue, "MNLI", dict_path, out)
    assert meta["splits"] == {"train": 1, "valid": 1, "valid_mm": 1, "test": 1, "test_mm": 1}
    assert load_labels(out, "valid_mm").tolist() == [0]  # contradiction
    assert load_labels(out, "train").tolist() == [2]  # neutral
    assert read_index(out, "test_mm") == ["9"] and load_labels(out, "test_mm") is None


def test_pairs_supplementary_text(env):
    d, dict_path, glue, tmp = env
    pairs = os.path.join(str(tmp), "pairs")
    write(os.path.join(pairs, "train.tsv"), "sentence1\nThe cat.\na dog\n")
    meta = prepare(pairs, "pairs", dict_path, str(tmp / "ild"))
    assert meta["is_pair"] is False and meta["labelled_splits"] == []
    assert meta["splits"] == {"train": 2} and meta["missing_splits"] == ["valid"]
    assert sorted(os.listdir(tmp / "ild")) == ["index", "input0", "meta.json"]
    assert tokens(str(tmp / "ild"), "input0", "train", d) == [["the", "cat", "."], ["a", "dog"]]
    write(os.path.join(pairs, "dev.tsv"), "sentence1\tsentence2\nA\tB\n")
    with pytest.raises(GlueFormatError, match=r"train.tsv:1: no sentence b column, but .*dev"):
        prepare(pairs, "pairs", dict_path, str(tmp / "ild2"))
    assert not os.path.exists(tmp / "ild2")


def test_tokenizer_matches_hf_bert_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = VOCAB + ["un", "##aff", "##able", "中", "[", "]", "naive", "naïve", ",", "##ed"]
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    d = dictionary_from_vocab(vocab)
    texts = ["The cat sat.", "unaffable cats", "Naïve CAFÉ, is!", "中文 cat", "a\u0000b\tc",
             "[SEP] the [CLS]", "", "   ", "dog" * 40, "ran?runs"]
    for lowercase in (True, False):
        hf = transformers.BertTokenizer(str(vocab_path), do_lower_case=lowercase)
        ours = encode_texts(build_tokenizer(d, lowercase), texts)
        assert [[d[i] for i in ids] for ids in ours] == [hf.tokenize(t) for t in texts]


def test_existing_output_is_never_clobbered(env, monkeypatch):
    d, dict_path, glue, tmp = env
    out = str(tmp / "bin")
    prepare(glue, "RTE", dict_path, out)
    before = tree_digest(out)
    with pytest.raises(OutputExistsError, match=r"bin already exists.*pass --overwrite"):
        prepare(glue, "RTE", dict_path, out)
    assert tree_digest(out) == before
    # a malformed file fails before anything is written, even with overwrite
    with open(os.path.join(glue, "RTE", "dev.tsv"), "a", encoding="utf-8") as f:
        f.write("6\tbroken row\n")
    with pytest.raises(GlueFormatError, match=r"dev.tsv:3: 2 column\(s\)"):
        prepare(glue, "RTE", dict_path, out, overwrite=True)
    assert tree_digest(out) == before
    with pytest.raises(GlueFormatError):
        prepare(glue, "RTE", dict_path, str(tmp / "fresh"))
    assert not os.path.exists(tmp / "fresh")
    # a failure while writing (disk full, ...) leaves the old folder and no temporary one
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("fairseq_crild.data.binarize.write_label_dataset", disk_full)
        with pytest.raises(OSError, match="No space"):
            prepare(glue, "CoLA", dict_path, out, overwrite=True)
    assert tree_digest(out) == before
    assert sorted(os.listdir(tmp)) == ["bin", "glue", "model"]
    # missing dictionary / GLUE folder: same treatment
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        prepare(glue, "CoLA", str(tmp / "nope.txt"), str(tmp / "fresh"))
    with pytest.raises(GlueFormatError, match="GLUE folder not found"):
        prepare(str(tmp / "noglue"), "CoLA", dict_path, str(tmp / "fresh"))
    assert not os.path.exists(tmp / "fresh")
    # --overwrite replaces the folder once the new one is complete
    write(os.path.join(glue, "RTE", "dev.tsv"), RTE_HEAD + "5\tthe dog\tthe cat\tentailment\n"
                                                           "6\tcat\tdog\tentailment\n")
    meta = prepare(glue, "RTE", dict_path, out, overwrite=True)
    assert meta["splits"]["valid"] == 2 and load_labels(out, "valid").tolist() == [0, 0]
    assert sorted(os.listdir(tmp)) == ["bin", "glue", "model"]


def test_script(env, capsys):
    from scripts.prepare_glue import main

    d, dict_path, glue, tmp = env
    out = str(tmp / "x")
    args = ["--glue-dir", glue, "--task", "cola", "--dict", dict_path, "--out", out,
            "--no-lowercase", "--workers", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}: CoLA (train 2, valid 1)"
    assert tokens(out, "input0", "train", d)[0] == ["The", "cat", "ran", "."]
    before = tree_digest(out)

    assert main(args) == 2 and tree_digest(out) == before
    assert capsys.readouterr().err.splitlines() == [
        f"prepare_glue: error: {out} already exists and is not empty; pass --overwrite to "
        "replace it"]

    # the real entry point, in a fresh process: one line on stderr, whatever fairseq logs
    with open(os.path.join(glue, "CoLA", "train.tsv"), "a", encoding="utf-8") as f:
        f.write("gj04\tperhaps\t\tA cat.\n")
    proc = run_script("scripts/prepare_glue.py", *args, "--overwrite", check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"{os.path.join(glue, 'CoLA', 'train.tsv')}:3: unknown label 'perhaps'" in lines[0]
    assert tree_digest(out) == before
    assert sorted(os.listdir(tmp)) == ["glue", "model", "x"]
