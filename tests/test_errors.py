"""One error base class (fairseq_crild.errors.CrildError) for the errors the project raises,
and the commands that read a checkpoint end a truncated one with one clean line."""

import ast
import importlib
import os

import pytest

from fairseq_crild.errors import CrildError
from tests.conftest import ROOT

COMMANDS = {  # command family -> its console entry and the arguments after the checkpoint
    "classify": ("fairseq_crild.cli.classify", ["--data", "DATA", "--pair", "a b", "c d"],
                 "classify"),
    "predict": ("fairseq_crild.cli.predict", ["--data", "DATA", "--split", "valid",
                                              "--out-dir", "OUT"], "predict_glue"),
    "export-hf": ("fairseq_crild.cli.export_hf", ["OUT", "--data", "DATA"],
                  "export_hf_classifier"),
    "export-onnx": ("fairseq_crild.cli.export_onnx", ["OUT/model.onnx", "--data", "DATA"],
                    "export_onnx"),
    "export-hf-bert": ("fairseq_crild.cli.export_hf_bert", ["OUT", "--dict", "DICT"],
                       "export_hf_bert"),
}


def _error_classes():
    """(module, class name) of every class in fairseq_crild/ and scripts/ whose name ends
    in Error or that is StageFailed."""
    found = []
    for top in ("fairseq_crild", "scripts"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                module = module.removesuffix(".__init__")
                found += [(module, node.name) for node in tree.body
                          if isinstance(node, ast.ClassDef)
                          and (node.name.endswith("Error") or node.name == "StageFailed")]
    return found


def test_every_project_error_derives_from_crild_error():
    classes = _error_classes()
    assert len(classes) >= 18, classes
    names = {name for _, name in classes}
    assert {"GlueDataError", "ExportError", "ConversionError", "TeacherMismatchError",
            "StageFailed", "UnsafeCheckpointError", "OutputExistsError"} <= names
    wrong = []
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        if not issubclass(cls, CrildError):
            wrong.append(f"{module}.{name}")
    assert not wrong, wrong
    # and each keeps the built-in class it had, so existing except clauses still match
    from fairseq_crild.outputs import OutputExistsError
    from fairseq_crild.pipeline.runner import StageFailed

    assert issubclass(StageFailed, RuntimeError) and issubclass(OutputExistsError, OSError)


@pytest.mark.parametrize("family", sorted(COMMANDS))
def test_a_truncated_checkpoint_is_one_clean_line(family, tiny_env, tmp_path, capsys):
    module, extra, prog = COMMANDS[family]
    good = (tiny_env["ckpt"] / "model.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    where = {"OUT": str(tmp_path / "out"), "DATA": str(tiny_env["data"]),
             "DICT": str(tiny_env["ckpt"] / "dict.txt")}
    extra = [where.get(a.split("/")[0], a.split("/")[0]) + a[len(a.split("/")[0]):]
             for a in extra]
    code = importlib.import_module(module).main([str(cut), *extra])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("INFO:")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "cut.pt" in lines[0]
    assert not (tmp_path / "out").exists()
