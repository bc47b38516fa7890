"""meta.json as data.meta.GlueMeta: old folders load, writer bytes round-trip unchanged, keys
this version does not know are kept, wrong types are refused naming the file and key."""

import dataclasses
import json

import pytest

from fairseq_crild.data.layout import BERT, ROBERTA, layout_of
from fairseq_crild.data.meta import GlueMeta, MetaFormatError, read_meta_file, write_meta
from fairseq_crild.errors import CrildError

# a BERT folder of an early prepare_glue.py: no input_format, lowercase, vocab_sha256,
# unk_rate, labelled_splits or missing_splits
OLD = {
    "format_version": 1, "tool": "fairseq-crild prepare_glue", "task": "RTE",
    "label_names": ["entailment", "not_entailment"], "regression": False, "num_classes": 2,
    "metrics": ["accuracy"], "main_metric": "accuracy", "is_pair": True,
    "splits": {"train": 2, "valid": 1}, "sources": {"train": {"file": "/g/train.tsv",
                                                              "sha256": "ab"}},
    "dict_sha256": "cd", "vocab_size": 30, "index_file": "index/{split}.txt",
    "label_dtype": "int64",
}


def _dumped(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def test_an_old_meta_without_the_newer_keys_loads(tmp_path):
    (tmp_path / "meta.json").write_text(_dumped(OLD), encoding="utf-8")
    meta = read_meta_file(str(tmp_path))
    assert meta.task == "RTE" and meta.label_names == ("entailment", "not_entailment")
    assert meta.regression is False and meta.num_outputs == 2 and meta.is_pair
    assert dict(meta.splits) == {"train": 2, "valid": 1}
    # absent keys mean what they always meant: BERT layout, lower-cased, nothing recorded
    assert layout_of(meta) is BERT and meta.input_format is None and meta.lowercase is True
    assert meta.vocab_sha256 is None and meta.unk_rate is None and meta.labelled_splits == ()
    assert meta.extra["sources"] == OLD["sources"] and meta.extra["label_dtype"] == "int64"
    (tmp_path / "again").mkdir()
    write_meta(str(tmp_path / "again"), meta)
    assert (tmp_path / "again" / "meta.json").read_text(encoding="utf-8") == _dumped(OLD)


def test_the_writers_bytes_round_trip(tiny_env, tmp_path):
    """prepare_glue.py's meta.json, read and written back: byte for byte the same file."""
    written = (tiny_env["data"] / "meta.json").read_text(encoding="utf-8")
    meta = read_meta_file(str(tiny_env["data"]))
    assert meta.task == "RTE" and meta.vocab_sha256 and meta.lowercase is True
    write_meta(str(tmp_path), meta)
    assert (tmp_path / "meta.json").read_text(encoding="utf-8") == written
    assert GlueMeta.from_json(json.loads(written)).to_json() == json.loads(written)


def test_newer_keys_and_their_order_are_kept():
    newer = {"future_key": {"a": [1, 2]}, **OLD, "input_format": "roberta", "bpe": "gpt2",
             "unk_rate": 0, "another": None}
    meta = GlueMeta.from_json(newer)
    assert layout_of(meta) is ROBERTA and meta.bpe == "gpt2" and meta.unk_rate == 0
    out = meta.to_json()
    assert out == newer and list(out) == list(newer)
    assert _dumped(out) == _dumped(newer)  # 0 stays 0, not 0.0


def test_a_changed_field_is_written_in_its_place():
    meta = dataclasses.replace(GlueMeta.from_json(OLD), task="MRPC", lowercase=False)
    out = meta.to_json()
    assert out["task"] == "MRPC" and list(out)[:len(OLD)] == list(OLD)
    assert list(out)[-1] == "lowercase" and out["lowercase"] is False  # new: appended


def test_an_empty_meta_and_one_built_in_code():
    empty = GlueMeta.from_json({})
    assert empty == GlueMeta() and empty.to_json() == {} and layout_of(empty) is BERT
    with pytest.raises(MetaFormatError, match="num_classes"):
        empty.num_outputs
    built = GlueMeta(task="STS-B", regression=True, num_classes=1, extra={"tool": "x"})
    assert built.num_outputs == 1
    assert built.to_json() == {"task": "STS-B", "regression": True, "num_classes": 1,
                               "tool": "x"}


@pytest.mark.parametrize("key, value, what", [
    ("num_classes", "2", "an integer"), ("num_classes", True, "an integer"),
    ("label_names", "entailment", "a list of strings"), ("regression", 1, "true or false"),
    ("splits", {"train": 2.5}, "split name"), ("unk_rate", "0.1", "a number"),
])
def test_a_key_of_the_wrong_type_is_refused_naming_file_and_key(tmp_path, key, value, what):
    (tmp_path / "meta.json").write_text(json.dumps({**OLD, key: value}), encoding="utf-8")
    with pytest.raises(MetaFormatError) as err:
        read_meta_file(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "meta.json") in msg and repr(key) in msg and what in msg
    assert isinstance(err.value, CrildError) and isinstance(err.value, ValueError)


def test_a_meta_that_is_not_a_json_object(tmp_path):
    assert read_meta_file(str(tmp_path)) is None  # no meta.json at all
    (tmp_path / "meta.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(MetaFormatError, match="expected a JSON object"):
        read_meta_file(str(tmp_path))
    (tmp_path / "meta.json").write_text('{"task": ', encoding="utf-8")
    with pytest.raises(MetaFormatError, match="not JSON"):
        read_meta_file(str(tmp_path))
