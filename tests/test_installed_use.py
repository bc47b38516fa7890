"""Installed use: a non-editable ``pip install .`` into a fresh venv, then, from an empty
directory outside the repository, convert -> prepare -> a 2-update fairseq-train with
``--user-dir $(python -m fairseq_crild --user-dir)`` -> export, all through installed commands.

To stay fast and offline the venv gets torch, fairseq and transformers from the repository's
environment (a .pth line naming its site-packages, which adds that folder but none of its
.pth files, so the editable install of the checkout stays invisible) and the plugin is
installed with ``--no-deps --no-build-isolation``. fairseq's own ``fairseq-train`` script
lives in that other environment, so training runs it as ``python -m fairseq_cli.train`` (what
the ``fairseq-train`` entry point calls) with the venv's interpreter.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import ROOT, vocab_for, write_rte_slice

# what a source distribution of the checkout holds that a wheel build reads
SOURCE = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "fairseq_crild", "scripts")


def _run(venv, cwd, *cmd, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """{venv, python, site}: the checkout installed (a built wheel) into a fresh venv."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"  # a copy: an in-tree build would leave build/ in the checkout
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCE:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "repo_env.pth"), "w", encoding="utf-8") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")  # torch, fairseq, pip, setuptools
    _run(venv, base, python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", str(src))
    return {"venv": venv, "python": python, "site": site}


def test_wheel_holds_the_package_and_its_commands(installed, tmp_path):
    venv, python, site = installed["venv"], installed["python"], installed["site"]
    from fairseq_crild.cli.commands import COMMANDS

    for name in COMMANDS:
        assert (venv / "bin" / name).is_file(), name
    assert not os.path.exists(os.path.join(site, "scripts"))  # no top-level 'scripts' package
    # the commands' code is in the package itself: scripts/ is not installed in any form
    assert not os.path.exists(os.path.join(site, "fairseq_crild", "_scripts"))
    assert os.path.isfile(os.path.join(site, "fairseq_crild", "cli", "classify.py"))
    where = _run(venv, tmp_path, python, "-c",
                 "import fairseq_crild; print(fairseq_crild.__file__)")
    assert where.stdout.strip() == os.path.join(site, "fairseq_crild", "__init__.py")
    user_dir = _run(venv, tmp_path, python, "-m", "fairseq_crild", "--user-dir").stdout.strip()
    assert user_dir == os.path.join(site, "fairseq_crild")
    listing = _run(venv, tmp_path, python, "-m", "fairseq_crild").stdout
    assert all(name in listing for name in COMMANDS)
    bad = _run(venv, tmp_path, python, "-m", "fairseq_crild", "no-such", check=False)
    assert bad.returncode == 2 and "no command 'no-such'" in bad.stderr


def test_convert_prepare_train_export_from_outside_the_repo(installed, tmp_path):
    import torch
    import transformers

    venv, python, site = installed["venv"], installed["python"], installed["site"]
    inputs = tmp_path / "inputs"
    write_rte_slice(str(inputs / "glue" / "RTE"), n_train=32, n_dev=16)
    hf = inputs / "hf"
    hf.mkdir()
    vocab = vocab_for(str(inputs / "glue" / "RTE"))
    (hf / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128)).save_pretrained(str(hf))
    work = tmp_path / "work"  # empty, outside the repository: every path below is relative
    work.mkdir()
    assert not os.listdir(work) and not str(work).startswith(ROOT)

    out = _run(venv, work, "crild-convert", hf, "ckpt")
    assert "wrote ckpt/model.pt (2 layers, 32 wide" in out.stdout
    out = _run(venv, work, "crild-prepare", "--glue-dir", inputs / "glue", "--task", "rte",
               "--dict", "ckpt/dict.txt", "--out", "data-bin/RTE")
    assert "wrote data-bin/RTE: RTE (train 32, valid 16, test 8)" in out.stdout
    user_dir = _run(venv, work, python, "-m", "fairseq_crild", "--user-dir").stdout.strip()
    train = _run(venv, work, python, "-m", "fairseq_cli.train", "data-bin/RTE",
                 "--user-dir", user_dir, "--task", "distill_glue", "--arch", "bert",
                 "--encoder-layers", "2", "--encoder-embed-dim", "32",
                 "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
                 "--max-position-embeddings", "128", "--criterion", "glue_ce",
                 "--finetune-from-model", "ckpt/model.pt", "--optimizer", "adam", "--lr", "1e-3",
                 "--batch-size", "8", "--max-update", "2", "--cpu", "--num-workers", "0",
                 "--no-epoch-checkpoints", "--save-dir", "teacher", "--seed", "1")
    log = train.stdout + train.stderr
    assert "num_updates 2" in log or '"num_updates": "2"' in log, log[-2000:]
    state = torch.load(work / "teacher" / "checkpoint_last.pt", map_location="cpu",
                       weights_only=False)
    assert state["cfg"]["common"]["user_dir"] == os.path.join(site, "fairseq_crild")
    assert state["optimizer_history"][-1]["num_updates"] == 2

    out = _run(venv, work, "crild-export-hf", "teacher/checkpoint_last.pt", "hf-out",
               "--data", "data-bin/RTE")
    assert "wrote hf-out" in out.stdout and "same predicted class 16/16" in out.stdout
    cfg = json.loads((work / "hf-out" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "entailment", "1": "not_entailment"}
    # transformers reads the exported folder; its logits are the student's (checked above by
    # the export's own parity gate): here, that the folder loads and has 2 layers
    model = transformers.BertForSequenceClassification.from_pretrained(str(work / "hf-out"))
    assert model.config.num_hidden_layers == 2

    # the same teacher stage through hydra: configs written here, run from here
    _run(venv, work, "crild-write-configs", "--only", "cpu/RTE/teacher")
    hydra = _run(venv, work, "crild-hydra-train", "--config-dir", "configs/cpu/RTE",
                 "--config-name", "teacher", f"task.data={work / 'data-bin' / 'RTE'}",
                 f"checkpoint.save_dir={work / 'hydra-teacher'}",
                 f"checkpoint.finetune_from_model={work / 'ckpt' / 'model.pt'}",
                 "model._name=bert", "model.encoder_layers=2", "model.encoder_embed_dim=32",
                 "model.encoder_attention_heads=4", "model.encoder_ffn_embed_dim=64",
                 "model.max_position_embeddings=128", "optimization.max_update=2",
                 "common.log_format=simple")
    assert "num_updates 2" in hydra.stdout + hydra.stderr
    assert (work / "hydra-teacher" / "checkpoint_last.pt").is_file()


def test_written_configs_carry_the_installed_user_dir(installed, tmp_path):
    venv, site = installed["venv"], installed["site"]
    out = _run(venv, tmp_path, "crild-write-configs", "--only", "cpu/RTE/teacher")
    assert "1 config(s) written" in out.stdout
    text = (tmp_path / "configs" / "cpu" / "RTE" / "teacher.yaml").read_text()
    assert f"  user_dir: {os.path.join(site, 'fairseq_crild')}\n" in text
    committed = open(os.path.join(ROOT, "configs", "cpu", "RTE", "teacher.yaml")).read()
    assert text == committed.replace("user_dir: fairseq_crild",
                                     f"user_dir: {os.path.join(site, 'fairseq_crild')}")


def test_user_dir_helpers(tmp_path):
    import fairseq_crild
    from fairseq_crild.cli.hydra_train import with_user_dir
    from fairseq_crild.locations import USER_DIR, absolute_user_dir

    assert USER_DIR == os.path.dirname(os.path.abspath(fairseq_crild.__file__))
    assert absolute_user_dir(["D", "--user-dir", "fairseq_crild", "--task", "t"]) == \
        ["D", "--user-dir", USER_DIR, "--task", "t"]
    assert absolute_user_dir(["--user-dir", "/elsewhere/x"]) == ["--user-dir", "/elsewhere/x"]
    args = ["--config-name", "teacher", "task.data=D"]
    # outside a checkout: the relative common.user_dir would not resolve, so it is overridden
    assert with_user_dir(args, str(tmp_path)) == args + [f"common.user_dir={USER_DIR}"]
    assert with_user_dir(args, ROOT) == args  # the checkout's root: as before
    given = args + ["common.user_dir=/mine"]
    assert with_user_dir(given, str(tmp_path)) == given

