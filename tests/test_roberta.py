"""RoBERTa teachers and students: fairseq's recipe layout, exact conversion, fairseq-train.

One module fixture builds everything offline: a sentencepiece model trained on the tiny RTE
slice, the folder written by scripts/prepare_glue_roberta.py, and a random 3-layer fairseq
RoBERTa built by fairseq's own sentence_prediction task on that folder (so the folder is
proven readable by fairseq) and saved as a fairseq checkpoint with a ``glue`` head.
"""

import copy
import json

import pytest
import torch

from tests.conftest import run_script
from tests.helpers_roberta import build_roberta_data

LABELS = ["entailment", "not_entailment"]
TEACHER_ARGS = ["--arch", "roberta_base", "--encoder-layers", "3", "--encoder-embed-dim", "32",
                "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
                "--max-positions", "128"]


def fairseq_sentence_prediction(data, *extra):
    """fairseq's own RoBERTa GLUE setup on ``data`` (the recipe's --init-token 0
    --separator-token 2): returns (cfg, task)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [str(data), "--task", "sentence_prediction", "--criterion", "sentence_prediction",
            "--num-classes", "2", "--init-token", "0", "--separator-token", "2",
            "--classification-head-name", "glue", "--cpu", *TEACHER_ARGS, *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    return cfg, tasks.setup_task(cfg.task)


def save_fairseq_checkpoint(cfg, model, path):
    """What fairseq's trainer writes (cfg as a plain container, optimizer history)."""
    from omegaconf import OmegaConf

    torch.save({"args": None, "cfg": OmegaConf.to_container(cfg, resolve=True,
                                                            enum_to_str=True),
                "model": model.state_dict(), "criterion": None,
                "optimizer_history": [{"criterion_name": "SentencePredictionCriterion",
                                       "optimizer_name": "none", "lr_scheduler_state": {},
                                       "num_updates": 0}],
                "task_state": {}, "extra_state": {}}, path)


@pytest.fixture(scope="module")
def roberta_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("roberta")
    env = build_roberta_data(base)
    cfg, task = fairseq_sentence_prediction(env["data"])
    torch.manual_seed(0)
    model = task.build_model(cfg.model)  # registers the "glue" head, as fairseq-train does
    with torch.no_grad():  # non-trivial LayerNorm/bias values so the mapping is really tested
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    teacher = base / "teacher.pt"
    save_fairseq_checkpoint(cfg, model, teacher)
    return {"base": base, **env, "teacher": teacher}


def distill_task(data, max_positions=64, **overrides):
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    cfg = DistillGlueConfig(data=str(data), max_positions=max_positions, seed=1, **overrides)
    return DistillGlueTask.setup_task(cfg)


def test_folder_follows_fairseq_recipe(roberta_env):
    """fairseq's sentence_prediction and distill_glue build the same <s> a </s> </s> b </s>
    token ids and the same labels from the prepared folder."""
    meta = json.loads((roberta_env["data"] / "meta.json").read_text())
    assert meta["input_format"] == "roberta" and meta["bpe"] == "sentencepiece"
    assert meta["unk_rate"] < 0.01
    _, fs_task = fairseq_sentence_prediction(roberta_env["data"])
    ours = distill_task(roberta_env["data"], max_positions=512)  # fairseq's does not truncate
    assert [ours.dictionary[i] for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert ours.dictionary[len(ours.dictionary) - 1] == "<mask>"
    assert len(ours.dictionary) == len(fs_task.source_dictionary)
    for split in ("train", "valid"):
        fs_task.load_dataset(split)
        ours.load_dataset(split)
        theirs, mine = fs_task.datasets[split], ours.datasets[split]
        assert len(theirs) == len(mine)
        for i in range(len(mine)):
            a, b = theirs[i], mine[i]
            assert torch.equal(a["net_input.src_tokens"], b["source"]), i
            assert int(a["target"]) == int(b["target"])
        src = mine[0]["source"]
        assert src[0] == 0 and src[-1] == 2 and (src == 2).sum() == 3  # <s> a </s></s> b </s>
    batch = mine.collater([mine[i] for i in range(4)])
    assert set(batch["net_input"]) == {"src_tokens"}  # no token types


def test_truncation_keeps_the_roberta_frame(roberta_env):
    task = distill_task(roberta_env["data"], max_positions=16)  # every pair truncated
    task.load_dataset("train")
    ds = task.datasets["train"]
    for i in range(len(ds)):
        src = ds[i]["source"]
        assert len(src) == ds.size(i) <= 16
        assert src[0] == 0 and src[-1] == 2 and (src == 2).sum() == 3


def test_teacher_conversion_matches_fairseq_roberta(roberta_env):
    """Our crild_roberta, loaded from the fairseq checkpoint, gives fairseq's RobertaModel
    outputs: every layer's hidden states, the last features and the head's logits."""
    from fairseq import checkpoint_utils

    from fairseq_crild.distill.teacher import FrozenTeacher
    from fairseq_crild.models.loading import load_bert
    from fairseq_crild.models.requests import FeatureRequest
    from fairseq_crild.models.roberta import RobertaStyleModel

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(roberta_env["teacher"])])
    ref = models[0].eval()
    task = distill_task(roberta_env["data"], max_positions=128)
    teacher = FrozenTeacher.load(str(roberta_env["teacher"]), task.dictionary, "glue", 2, LABELS,
                                 str(roberta_env["data"] / "input0" / "dict.txt"))
    assert isinstance(teacher.model, RobertaStyleModel) and teacher.num_layers == 3
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    order = ds.ordered_indices()  # by length: the shortest and the longest, so rows pad
    batch = ds.collater([ds[i] for i in list(order[:6]) + list(order[-6:])])
    src = batch["net_input"]["src_tokens"]
    assert src.eq(1).any()  # padded rows included
    with torch.no_grad():
        feats_ref, extra_ref = ref(src, features_only=True, return_all_hiddens=True)
        logits_ref, _ = ref(src, classification_head_name="glue")
    request = FeatureRequest(hidden_states=True, attention_scores=frozenset({2}),
                             qkv=frozenset({2}))
    feats, extra = teacher(batch["net_input"], None, request)
    logits, _ = teacher(batch["net_input"], "glue")
    assert (feats - feats_ref).abs().max() <= 1e-5
    assert (logits - logits_ref).abs().max() <= 1e-5
    assert len(extra["hidden_states"]) == len(extra_ref["inner_states"]) == 4
    for ours, theirs in zip(extra["hidden_states"], extra_ref["inner_states"]):
        assert (ours - theirs.transpose(0, 1)).abs().max() <= 1e-5
    assert extra["attention_scores"][2].shape == (12, 4, src.size(1), src.size(1))
    # the same conversion serves prediction/export code (load_bert)
    model, _ = load_bert(str(roberta_env["teacher"]), task.dictionary)
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch["net_input"], classification_head_name="glue")[0],
                           logits)
    assert extra["qkv"][2]["q"].shape == (12, src.size(1), 32)


def test_teacher_mismatches_name_the_files(roberta_env, tmp_path):
    """A vocabulary or label order other than the teacher's fine-tuning data is refused with
    both files named; a BERT-layout folder is refused for a RoBERTa student."""
    from fairseq_crild.distill.teacher import FrozenTeacher, TeacherMismatchError
    from fairseq_crild.tasks.distill_glue import GlueDataError

    data = roberta_env["data"]
    dict_path = str(data / "input0" / "dict.txt")
    task = distill_task(data)
    state = torch.load(roberta_env["teacher"], weights_only=False)
    # same size, other symbols: the teacher's data folder holds another dict.txt
    other = tmp_path / "other"
    (other / "input0").mkdir(parents=True)
    (other / "label").mkdir()
    lines = (data / "input0" / "dict.txt").read_text().splitlines()
    (other / "input0" / "dict.txt").write_text("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")
    (other / "label" / "dict.txt").write_text("entailment 1\nnot_entailment 1\n")
    state["cfg"]["task"]["data"] = str(other)
    path = tmp_path / "teacher_other_vocab.pt"
    torch.save(state, path)
    with pytest.raises(TeacherMismatchError) as err:
        FrozenTeacher.load(str(path), task.dictionary, "glue", 2, LABELS, dict_path)
    assert str(other / "input0" / "dict.txt") in str(err.value) and dict_path in str(err.value)
    # same vocabulary, labels in the other order (fairseq's recipe sorts them by frequency)
    (other / "input0" / "dict.txt").write_text("\n".join(lines) + "\n")
    (other / "label" / "dict.txt").write_text("not_entailment 30\nentailment 18\n")
    with pytest.raises(TeacherMismatchError, match="label/dict.txt"):
        FrozenTeacher.load(str(path), task.dictionary, "glue", 2, LABELS, dict_path)
    # another vocabulary size (e.g. data binarised with another model's dict.txt)
    bigger = copy.deepcopy(task.dictionary)
    bigger.add_symbol("▁extra")
    # the size depends on the slice (real RTE rows, or synthetic ones where GLUE is absent)
    with pytest.raises(TeacherMismatchError, match=f"{len(bigger)} symbols") as err:
        FrozenTeacher.load(str(roberta_env["teacher"]), bigger, "glue", 2, LABELS, dict_path)
    assert dict_path in str(err.value)
    # longer inputs than the teacher's position table
    with pytest.raises(GlueDataError, match="position table holds 128"):
        distill_task(data, max_positions=256, teacher_path=str(roberta_env["teacher"])).teachers
    # no such head
    with pytest.raises(TeacherMismatchError, match="--classification-head-name"):
        FrozenTeacher.load(str(roberta_env["teacher"]), task.dictionary, "sst", 2, LABELS,
                           dict_path)


def test_bert_student_refuses_roberta_layout(roberta_env):
    """The layouts differ ([CLS] a [SEP] b [SEP] + types vs <s> a </s></s> b </s>): a model of
    the other kind is refused by name instead of training on misframed inputs."""
    from omegaconf import OmegaConf

    from fairseq_crild.models.bert import BertConfig
    from fairseq_crild.tasks.distill_glue import GlueDataError

    task = distill_task(roberta_env["data"])
    cfg = BertConfig(encoder_layers=1, encoder_embed_dim=16, encoder_attention_heads=2,
                     encoder_ffn_embed_dim=32, max_position_embeddings=64)
    with pytest.raises(GlueDataError, match="crild_roberta"):
        task.build_model(OmegaConf.create({**vars(cfg), "_name": "bert"}))


def test_already_bpe_encoded_text_gives_the_same_folder(roberta_env, tmp_path):
    """--bpe none on text encoded beforehand = --bpe sentencepiece on the raw text."""
    import sentencepiece as spm

    from fairseq_crild.data.roberta_data import prepare_roberta_task

    sp = spm.SentencePieceProcessor(model_file=str(roberta_env["spm"]))
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        lines = (roberta_env["glue"] / "RTE" / f"{split}.tsv").read_text().splitlines()
        rows = [lines[0]]
        for line in lines[1:]:
            cols = line.split("\t")
            cols[1:3] = [" ".join(sp.encode(c, out_type=str)) for c in cols[1:3]]
            rows.append("\t".join(cols))
        (tmp_path / "glue" / "RTE" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    meta = prepare_roberta_task(str(tmp_path / "glue"), "RTE", str(tmp_path / "out"), "none",
                                dict_path=str(roberta_env["data"] / "input0" / "dict.txt"))
    assert meta["vocab_sha256"] == json.loads(
        (roberta_env["data"] / "meta.json").read_text())["vocab_sha256"]
    for kind in ("input0", "input1", "label"):
        for split in ("train", "valid"):
            a = (tmp_path / "out" / kind / f"{split}.bin").read_bytes()
            b = (roberta_env["data"] / kind / f"{split}.bin").read_bytes()
            assert a == b, (kind, split)


def test_prepare_errors_are_one_line(roberta_env, tmp_path):
    proc = run_script("scripts/prepare_glue_roberta.py", "--glue-dir",
                      str(roberta_env["glue"]), "--task", "RTE", "--bpe", "gpt2",
                      "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "--dict is required" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_fairseq_train_distils_roberta_teacher(roberta_env):
    """Stage 1 (cr_ild, student initialised from the fairseq RoBERTa's first 2 layers) then
    stage 2 (kd) through fairseq-train, on the RoBERTa folder."""
    from tests.test_fairseq_train import train

    base, data, teacher = roberta_env["base"], roberta_env["data"], roberta_env["teacher"]
    student = ["--arch", "crild_roberta_tiny", "--encoder-layers", "2", "--encoder-embed-dim",
               "32", "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
               "--max-position-embeddings", "128"]
    s1 = base / "stage1"
    out = train(data, s1, *student, "--criterion", "cr_ild", "--teacher-path", str(teacher),
                "--init-student-from", str(teacher), "--ild-preset", "cr_ild",
                "--num-relation-heads", "4", "--consistency-on-relations", "--max-update", "4",
                "--disable-validation")
    logs = out.stdout + out.stderr
    assert "loss_qkv" in logs and "loss_cons" in logs and "student initialised" in logs
    state = torch.load(s1 / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["cfg"]["model"]["_name"] == "crild_roberta_tiny"
    assert state["cfg"]["model"]["layer_norm_eps"] == 1e-5
    assert "embeddings.token_type_embeddings.weight" not in state["model"]
    assert state["model"]["embeddings.position_embeddings.weight"].shape[0] == 128 + 2
    assert not any(k.startswith("teacher") for k in state["model"])
    s2 = base / "stage2"
    out = train(data, s2, *student, "--criterion", "kd", "--teacher-path", str(teacher),
                "--finetune-from-model", str(s1 / "checkpoint_last.pt"), "--max-update", "4",
                "--validate-interval-updates", "2", "--best-checkpoint-metric", "accuracy",
                "--maximize-best-checkpoint-metric")
    logs = out.stdout + out.stderr
    assert "loss_kd" in logs and "valid" in logs and "accuracy" in logs
    final = torch.load(s2 / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert final["task_state"]["label_names"] == LABELS
    assert all(torch.isfinite(v).all() for v in final["model"].values())
