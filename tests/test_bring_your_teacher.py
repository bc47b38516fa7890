"""Bring your own teacher: a fine-tuned HF BertForSequenceClassification becomes a --teacher-path
whose id2label is checked against the data's labels; the conversion prints --arch flags that
train; a wrong --arch names the differing sizes instead of torch's tensor-by-tensor dump."""

import json
import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.distill.teacher import FrozenTeacher, TeacherMismatchError
from fairseq_crild.models.arch_check import (
    ArchMismatchError,
    arch_flags,
    guard_checkpoint_loading,
    mismatch_message,
)
from tests.conftest import run_script
from tests.helpers_bert import make_tiny_hf_folder

DATA_LABELS = ["entailment", "not_entailment"]
COMMON = ["--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu", "--num-workers", "0",
          "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed", "--batch-size", "8",
          "--max-positions", "64", "--log-format", "simple", "--log-interval", "1",
          "--no-epoch-checkpoints", "--no-save", "--seed", "1"]


def _set_id2label(folder, names):
    path = os.path.join(folder, "config.json")
    cfg = json.load(open(path))
    cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
    cfg["label2id"] = {n: i for i, n in enumerate(names)}
    json.dump(cfg, open(path, "w"))


def _convert(hf, out, *extra):
    return run_script("scripts/convert_hf_bert.py", str(hf), str(out), *extra)


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory):
    return make_tiny_hf_folder(str(tmp_path_factory.mktemp("byo") / "hf"), with_classifier=2)


def _teacher(hf_classifier, tmp_path, names, *extra):
    hf = tmp_path / "hf"
    shutil.copytree(hf_classifier, hf)
    _set_id2label(str(hf), names)
    out = tmp_path / "conv"
    proc = _convert(hf, out, "--head-name", "glue", *extra)
    return out, proc


def _load(out, labels=DATA_LABELS):
    dictionary = load_bert_dictionary(str(out / "dict.txt"))
    return FrozenTeacher.load(str(out / "model.pt"), dictionary, "glue", 2, labels)


def test_swapped_labels_refused_by_name(hf_classifier, tmp_path):
    out, _ = _teacher(hf_classifier, tmp_path, ["not_entailment", "entailment"])
    with pytest.raises(TeacherMismatchError) as err:
        _load(out)
    message = str(err.value)
    assert "in another order" in message
    assert "output 0 is 'not_entailment' for the teacher, 'entailment' in the data" in message
    assert "--label-order entailment,not_entailment" in message


def test_matching_labels_accepted_ignoring_case(hf_classifier, tmp_path):
    out, proc = _teacher(hf_classifier, tmp_path, ["ENTAILMENT", "Not_Entailment"])
    assert "checked against the data's" in proc.stdout
    teacher = _load(out)
    hf = load_file(os.path.join(hf_classifier, "model.safetensors"))
    head = teacher.model.classification_heads["glue"].out_proj
    assert torch.equal(head.weight, hf["classifier.weight"])  # HF order kept


def test_label_order_reorders_the_classifier(hf_classifier, tmp_path):
    out, proc = _teacher(hf_classifier, tmp_path, ["not_entailment", "entailment"],
                         "--label-order", "entailment,not_entailment")
    assert "reordered" in proc.stdout
    teacher = _load(out)
    hf = load_file(os.path.join(hf_classifier, "model.safetensors"))
    head = teacher.model.classification_heads["glue"].out_proj
    # output 0 of the converted teacher is HF's output 1 (entailment), and vice versa
    assert torch.equal(head.weight[0], hf["classifier.weight"][1])
    assert torch.equal(head.weight[1], hf["classifier.weight"][0])
    assert torch.equal(head.bias, hf["classifier.bias"].flip(0))


def test_other_names_refused_unless_declared(hf_classifier, tmp_path):
    out, _ = _teacher(hf_classifier, tmp_path / "a", ["negative", "positive"])
    with pytest.raises(TeacherMismatchError, match="other names.*--label-names "
                       "entailment,not_entailment"):
        _load(out)
    out, proc = _teacher(hf_classifier, tmp_path / "b", ["negative", "positive"],
                         "--label-names", "entailment,not_entailment")
    assert "declared by --label-names" in proc.stdout
    _load(out)  # accepted as declared


def test_generic_labels_accepted_with_a_warning(hf_classifier, tmp_path, caplog):
    out, proc = _teacher(hf_classifier, tmp_path, ["LABEL_0", "LABEL_1"])
    assert "generic" in proc.stdout and "unchecked" in proc.stdout
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    assert "label_names" not in state["task_state"]
    assert state["task_state"]["hf_id2label"] == ["LABEL_0", "LABEL_1"]
    with caplog.at_level(logging.WARNING, logger="fairseq_crild.distill.teacher"):
        _load(out)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "not checked" in warned[0].getMessage()


def test_label_order_refused_for_generic_names(hf_classifier, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(hf_classifier, hf)
    _set_id2label(str(hf), ["LABEL_0", "LABEL_1"])
    proc = run_script("scripts/convert_hf_bert.py", str(hf), str(tmp_path / "o"), "--head-name",
                      "glue", "--label-order", "entailment,not_entailment", check=False)
    assert proc.returncode == 2 and "--label-names instead" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_hf_roberta_said_clearly(hf_classifier, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(hf_classifier, hf)
    cfg = json.load(open(hf / "config.json"))
    cfg["model_type"] = "roberta"
    json.dump(cfg, open(hf / "config.json", "w"))
    proc = run_script("scripts/convert_hf_bert.py", str(hf), str(tmp_path / "o"), check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "tensorboardX" not in ln]
    assert proc.returncode == 2 and len(lines) == 1
    assert "only fairseq RoBERTa checkpoints are read" in lines[0]


# ------------------------------------------------------------------ --arch flags


def _toy_sd(**sizes):
    """A state dict of the shapes of a BERT with these sizes (values irrelevant)."""
    from fairseq_crild.models.bert import BertConfig, BertModel

    cfg = BertConfig(**sizes)
    return BertModel(cfg, 40, 1).state_dict(), cfg


def test_mismatch_message_names_only_the_differing_sizes():
    from fairseq_crild.models.bert import BertConfig, BertModel

    sd, _ = _toy_sd(encoder_layers=3, encoder_embed_dim=16, encoder_attention_heads=2,
                    encoder_ffn_embed_dim=40, max_position_embeddings=32)
    model = BertModel(BertConfig(encoder_layers=2, encoder_embed_dim=16,
                                 encoder_attention_heads=4, encoder_ffn_embed_dim=24,
                                 max_position_embeddings=32), 40, 1)
    message = mismatch_message(sd, model)
    assert "encoder_layers 3 in the checkpoint vs 2 here" in message
    assert "encoder_ffn_embed_dim 40 in the checkpoint vs 24 here" in message
    assert "encoder_embed_dim" not in message.split("flags")[0]
    assert "max_position_embeddings" not in message
    assert ("--arch bert --encoder-layers 3 --encoder-embed-dim 16 --encoder-ffn-embed-dim 40 "
            "--max-position-embeddings 32 --type-vocab-size 2") in message
    guard_checkpoint_loading(model)
    with pytest.raises(ArchMismatchError):
        model.load_state_dict(sd, strict=True)
    assert mismatch_message(model.state_dict(), model) is None


def test_arch_flags_rebuild_the_model():
    sd, cfg = _toy_sd(encoder_layers=3, encoder_embed_dim=16, encoder_attention_heads=2,
                      encoder_ffn_embed_dim=40, max_position_embeddings=32, layer_norm_eps=1e-5)
    import dataclasses

    from fairseq_crild.models.bert import BertConfig, BertModel

    flags = arch_flags({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    assert flags == ("--arch bert --encoder-layers 3 --encoder-embed-dim 16 "
                     "--encoder-attention-heads 2 --encoder-ffn-embed-dim 40 "
                     "--max-position-embeddings 32 --type-vocab-size 2 --layer-norm-eps 1e-05")
    words = flags.split()[2:]  # the flags, read back as a config, load the weights strictly
    types = {f.name: f.type for f in dataclasses.fields(BertConfig)}
    kwargs = {}
    for flag, value in zip(words[::2], words[1::2]):
        name = flag[2:].replace("-", "_")
        kwargs[name] = float(value) if types[name] in (float, "float") else int(value)
    rebuilt = guard_checkpoint_loading(BertModel(BertConfig(**kwargs), 40, 1))
    rebuilt.load_state_dict(sd, strict=True)
    assert rebuilt.cfg.layer_norm_eps == 1e-5 and rebuilt.cfg.encoder_attention_heads == 2


@pytest.fixture(scope="module")
def converted(tiny_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("flags") / "conv"
    proc = _convert(tiny_env["hf"], out)
    lines = proc.stdout.splitlines()
    flags = lines[lines.index(next(ln for ln in lines if "model flags" in ln)) + 1].split()
    return out, flags


def test_printed_flags_train(tiny_env, converted, tmp_path):
    out, flags = converted
    # the tiny env's HF config: 4 layers x 32, 4 heads, ffn 64, 128 positions
    assert flags == ["--arch", "bert", "--encoder-layers", "4", "--encoder-embed-dim", "32",
                     "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
                     "--max-position-embeddings", "128", "--type-vocab-size", "2"]
    again = run_script("-m", "fairseq_crild.models.arch_check", str(out / "model.pt"))
    assert again.stdout.split() == flags
    proc = run_script("-m", "fairseq_cli.train", str(tiny_env["data"]), *COMMON, *flags,
                      "--criterion", "glue_ce", "--finetune-from-model", str(out / "model.pt"),
                      "--max-update", "2", "--save-dir", str(tmp_path / "run"))
    log = proc.stdout + proc.stderr
    assert "loading pretrained model from" in log and "num_updates 2" in log


def test_wrong_arch_gives_the_short_message(tiny_env, converted, tmp_path):
    out, flags = converted
    wrong = list(flags)
    wrong[wrong.index("--encoder-embed-dim") + 1] = "64"
    wrong[wrong.index("--encoder-layers") + 1] = "2"
    proc = run_script("-m", "fairseq_cli.train", str(tiny_env["data"]), *COMMON, *wrong,
                      "--criterion", "glue_ce", "--finetune-from-model", str(out / "model.pt"),
                      "--max-update", "2", "--save-dir", str(tmp_path / "run"), check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert "ArchMismatchError" in err
    assert "encoder_layers 4 in the checkpoint vs 2 here" in err
    assert "encoder_embed_dim 32 in the checkpoint vs 64 here" in err
    assert "--encoder-layers 4 --encoder-embed-dim 32" in err
    assert "size mismatch for" not in err and "Missing key(s)" not in err
