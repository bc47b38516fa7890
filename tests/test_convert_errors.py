"""convert_hf_bert.py refuses bad folders with one clear line and leaves nothing behind."""

import json
import os
import shutil

import pytest

from tests.conftest import run_script
from tests.helpers_bert import make_tiny_hf_folder


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_tiny_hf_folder(str(tmp_path_factory.mktemp("hf") / "good"))


def _variant(good, tmp_path, change):
    bad = str(tmp_path / "bad")
    shutil.copytree(good, bad)
    change(bad)
    return bad


def _edit_config(folder, **fields):
    path = os.path.join(folder, "config.json")
    cfg = json.load(open(path))
    cfg.update(fields)
    json.dump(cfg, open(path, "w"))


@pytest.mark.parametrize("change,message", [
    (lambda f: os.remove(os.path.join(f, "config.json")), "no config.json"),
    (lambda f: os.remove(os.path.join(f, "model.safetensors")), "no weights"),
    (lambda f: os.remove(os.path.join(f, "vocab.txt")), "no vocab.txt"),
    (lambda f: _edit_config(f, model_type="roberta"), "model_type is 'roberta'"),
    (lambda f: open(os.path.join(f, "vocab.txt"), "a").write("extra1\nextra2\n"),
     "vocab.txt has"),
])
def test_bad_folder_one_error_line_no_output(good, tmp_path, change, message):
    bad = _variant(good, tmp_path, change)
    out = tmp_path / "out"
    proc = run_script("scripts/convert_hf_bert.py", bad, str(out), check=False)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in errors if "tensorboardX" not in ln]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []


def test_existing_output_refused_unless_overwrite(good, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_script("scripts/convert_hf_bert.py", good, str(out), check=False)
    assert proc.returncode != 0 and "--overwrite" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    run_script("scripts/convert_hf_bert.py", good, str(out), "--overwrite")
    assert sorted(os.listdir(out)) == ["dict.txt", "model.pt", "tokenizer_config.json"]
