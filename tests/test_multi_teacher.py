"""Several teachers: kd averages their soft labels (weighted), cr_ild distils from the one
chosen by --ild-teacher-index, each teacher is loaded once and checked like a single one."""

import re

import pytest
import torch

from fairseq_crild.criterions.kd import KdCriterion, combine_teacher_logits
from fairseq_crild.distill.teacher import TeacherMismatchError, parse_teacher_weights
from fairseq_crild.models import BertConfig, BertModel
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask, GlueDataError
from tests.conftest import run_script
from tests.helpers_task import FakeDistillTask

VOCAB = 30


def _bert(seed, layers=2, dim=16, classes=2):
    torch.manual_seed(seed)
    cfg = BertConfig(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=2,
                     encoder_ffn_embed_dim=2 * dim, max_position_embeddings=32, dropout=0.0,
                     attention_dropout=0.0, pooler_dropout=0.0)
    model = BertModel(cfg, VOCAB, 1)
    model.register_classification_head("glue", num_classes=classes)
    with torch.no_grad():  # confident heads: BERT's 0.02 init gives near-uniform soft labels
        model.classification_heads["glue"].out_proj.weight.normal_(0.0, 3.0)
    return model


class _Task(FakeDistillTask):
    """The attributes kd reads from distill_glue, with teachers given in memory."""

    def __init__(self, teachers, weights, regression=False):
        super().__init__(teachers, weights, regression)


def _sample():
    tokens = torch.tensor([[0, 5, 6, 7, 2, 8, 2], [0, 9, 2, 10, 2, 1, 1],
                           [0, 11, 12, 2, 13, 2, 1], [0, 14, 2, 15, 16, 17, 2]])
    types_ = (torch.arange(7)[None] >= torch.tensor([[5], [3], [4], [3]])).long()
    return {"net_input": {"src_tokens": tokens, "token_type_ids": types_},
            "target": torch.tensor([0, 1, 1, 0]), "ntokens": int(tokens.ne(1).sum()),
            "nsentences": 4}


@pytest.mark.parametrize("regression", [False, True])
def test_two_identical_teachers_give_exactly_the_single_teacher_loss(regression):
    classes = 1 if regression else 2
    student = _bert(1, classes=classes).eval()
    # two separate models with equal weights (not one object listed twice)
    single = KdCriterion(_Task([_bert(0, classes=classes)], [1.0], regression), 2.0, 0.0)
    double = KdCriterion(_Task([_bert(0, classes=classes), _bert(0, classes=classes)],
                               [0.5, 0.5], regression), 2.0, 0.0)
    sample = _sample()
    if regression:
        sample["target"] = torch.tensor([0.5, 1.0, 3.0, 4.5])
    a, _, log_a = single(student, sample)
    b, _, log_b = double(student, sample)
    assert torch.equal(a, b) and torch.equal(log_a["loss_kd"], log_b["loss_kd"])
    # a different second teacher does change the loss
    other = KdCriterion(_Task([_bert(0, classes=classes), _bert(7, classes=classes)],
                              [0.5, 0.5], regression), 2.0, 0.0)
    assert not torch.allclose(other(student, sample)[0], a)


def test_kd_uses_the_weighted_average_of_the_soft_labels():
    teachers, weights, temperature = [_bert(0), _bert(3), _bert(4)], [0.5, 0.3, 0.2], 2.0
    student = _bert(1).eval()
    crit = KdCriterion(_Task(teachers, weights), temperature, 0.0)
    sample = _sample()
    loss, n, _ = crit(student, sample)
    with torch.no_grad():
        zs, _ = student(**sample["net_input"], classification_head_name="glue")
        probs = sum(w * torch.softmax(t(**sample["net_input"], classification_head_name="glue")[0]
                                      / temperature, -1) for w, t in zip(weights, teachers))
    # T^2 * soft cross-entropy against the averaged probabilities, summed over the batch
    expected = -(temperature ** 2) * (probs * torch.log_softmax(zs / temperature, -1)).sum()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_combined_logits_reproduce_the_average_even_for_confident_teachers():
    z = [torch.tensor([[40.0, -40.0, 0.0]]), torch.tensor([[-40.0, 40.0, 0.0]]),
         torch.tensor([[0.0, 0.0, 3.0]])]
    weights = [0.25, 0.25, 0.5]
    for t in (1.0, 2.0):
        combined = combine_teacher_logits(z, weights, t, regression=False)
        want = sum(w * torch.softmax(x.double() / t, -1) for w, x in zip(weights, z))
        assert torch.allclose(torch.softmax(combined.double() / t, -1), want, atol=1e-6)
    reg = combine_teacher_logits([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])],
                                 [0.75, 0.25], 2.0, regression=True)
    assert torch.allclose(reg, torch.tensor([1.5, 3.0]))


def test_teacher_weights_option():
    assert parse_teacher_weights("", 3) == [1 / 3] * 3
    assert parse_teacher_weights("3,1", 2) == [0.75, 0.25]
    for bad, match in (("1", "1 weights for 2 teachers"), ("1,x", "numbers"),
                       ("1,-1", ">= 0"), ("0,0", "not all 0")):
        with pytest.raises(ValueError, match=match):
            parse_teacher_weights(bad, 2)


# ----------------------------------------------------------------------------- real task


def _write_teacher(tiny_env, path, seed, extra_vocab_rows=0):
    """The tiny converted BERT with a seeded random 2-class head, as a fairseq checkpoint;
    ``extra_vocab_rows`` makes its vocabulary larger than the data's."""
    state = torch.load(str(tiny_env["ckpt"] / "model.pt"), map_location="cpu")
    gen = torch.Generator().manual_seed(seed)
    sd = state["model"]
    dim = sd["pooler.weight"].shape[0]
    sd["classification_heads.glue.out_proj.weight"] = torch.randn(2, dim, generator=gen)
    sd["classification_heads.glue.out_proj.bias"] = torch.randn(2, generator=gen)
    if extra_vocab_rows:
        emb = sd["embeddings.word_embeddings.weight"]
        sd["embeddings.word_embeddings.weight"] = torch.cat(
            [emb, torch.randn(extra_vocab_rows, dim, generator=gen)])
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def teachers(tiny_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_teachers")
    return [_write_teacher(tiny_env, folder / f"t{i}.pt", seed=i) for i in range(2)] + [
        _write_teacher(tiny_env, folder / "other_vocab.pt", seed=5, extra_vocab_rows=3)]


def _task(tiny_env, **kw):
    return DistillGlueTask.setup_task(DistillGlueConfig(data=str(tiny_env["data"]), seed=1, **kw))


def test_task_loads_each_teacher_once_and_picks_the_ild_teacher(tiny_env, teachers):
    t0, t1, _ = teachers
    task = _task(tiny_env, teacher_path=f"{t0},{t1},{t0}", teacher_weights="2,1,1",
                 ild_teacher_index=1)
    assert [t.path for t in task.teachers] == [t0, t1, t0]
    assert task.teachers[0] is task.teachers[2]  # listed twice, loaded once
    assert task.teacher is task.teachers[1]
    assert task.teacher_weights == [0.5, 0.25, 0.25]
    for t in task.teachers:
        assert not t.model.training and not any(p.requires_grad for p in t.model.parameters())


def test_vocabulary_mismatch_of_the_second_teacher_is_refused(tiny_env, teachers):
    t0, _, other = teachers
    task = _task(tiny_env, teacher_path=f"{t0},{other}")
    with pytest.raises(TeacherMismatchError,
                       match=r"--teacher-path entry 2 of 2: teacher .*other_vocab\.pt: "
                             r"vocabulary differs"):
        task.teachers


def test_bad_multi_teacher_options_fail_before_loading(tiny_env, teachers):
    t0, t1, _ = teachers
    with pytest.raises(ValueError, match="1 weights for 2 teachers"):
        _task(tiny_env, teacher_path=f"{t0},{t1}", teacher_weights="1").teachers
    with pytest.raises(GlueDataError, match="--ild-teacher-index 2 is outside the 2"):
        _task(tiny_env, teacher_path=f"{t0},{t1}", ild_teacher_index=2).teachers
    with pytest.raises(ValueError, match="no empty entries"):
        _task(tiny_env, teacher_path=f"{t0},").teachers


def test_fairseq_train_kd_with_two_weighted_teachers(tiny_env, teachers, tmp_path):
    t0, t1, _ = teachers
    out = run_script(
        "-m", "fairseq_cli.train", str(tiny_env["data"]), "--user-dir", "fairseq_crild",
        "--task", "distill_glue", "--cpu", "--num-workers", "0", "--arch", "bert_tiny",
        "--criterion", "kd", "--teacher-path", f"{t0},{t1}", "--teacher-weights", "3,1",
        "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed", "--batch-size", "8",
        "--max-positions", "64", "--max-update", "2", "--log-format", "simple",
        "--log-interval", "1", "--disable-validation", "--no-epoch-checkpoints",
        "--save-dir", str(tmp_path / "kd"))
    logs = out.stdout + out.stderr
    assert "loss_kd" in logs
    for path in (t0, t1):  # both teachers loaded, once each
        assert len(re.findall(rf"teacher {re.escape(path)}: .*frozen", logs)) == 1
    state = torch.load(tmp_path / "kd" / "checkpoint_last.pt", map_location="cpu")
    assert not any(k.startswith("teacher") for k in state["model"])
