"""BERT-EMD: the transport plan, the cost-attention update, the cr_ild layer map ``emd`` and
its layer weights across a checkpoint (in process and through fairseq-train resume)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary

from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.emd import (
    EmdLayerWeights,
    cost_attention,
    pairwise_attention_kl,
    transport_plan,
)
from fairseq_crild.models import BertConfig, BertModel
from fairseq_crild.teacher import FrozenTeacher

VOCAB = 30

# Hand-made 2 x 3 problem: student weights (1/2, 1/2), teacher weights (1/3, 1/3, 1/3).
#   D = [[1, 2, 4],
#        [3, 1, 2]]
# Row 1 is fixed by row 0 (column sums are 1/3), so the cost is
#   sum_j F0j D0j + sum_j (1/3 - F0j) D1j = const + sum_j F0j (D0j - D1j),
# with D0 - D1 = (-2, 1, 2), 0 <= F0j <= 1/3 and sum_j F0j = 1/2: fill the most negative
# difference first, F0 = (1/3, 1/6, 0), hence F1 = (0, 1/6, 1/3) (unique: the differences
# are distinct). Cost: 1/3*1 + 1/6*2 + 1/6*1 + 1/3*2 = 3/2.
COST_2X3 = np.array([[1.0, 2.0, 4.0], [3.0, 1.0, 2.0]])
PLAN_2X3 = np.array([[1 / 3, 1 / 6, 0.0], [0.0, 1 / 6, 1 / 3]])


def test_hand_made_2x3_plan_is_the_known_optimum():
    plan = transport_plan(COST_2X3, [0.5, 0.5], [1 / 3, 1 / 3, 1 / 3])
    assert np.allclose(plan, PLAN_2X3, atol=1e-12)
    assert float((plan * COST_2X3).sum()) == pytest.approx(1.5, abs=1e-12)
    # unnormalised weights describe the same problem
    assert np.allclose(transport_plan(COST_2X3, [2, 2], [1, 1, 1]), PLAN_2X3, atol=1e-12)


def test_cost_attention_on_the_2x3_plan():
    # student unit costs: (1/3*1 + 1/6*2) / (1/2) = 4/3 and (1/6*1 + 1/3*2) / (1/2) = 5/3;
    # sum 3, so w~ = (3 / (4/3), 3 / (5/3)) = (9/4, 9/5), then softmax(w~ / T).
    # teacher unit costs: (1/3*1) / (1/3) = 1, (1/6*2 + 1/6*1) / (1/3) = 3/2, (1/3*2)/(1/3) = 2;
    # sum 9/2, so w~ = (9/2, 3, 9/4).
    def softmax(xs, t):
        e = [math.exp(x / t) for x in xs]
        return [v / sum(e) for v in e]

    for temperature in (1.0, 0.5):
        s, t = cost_attention(PLAN_2X3, COST_2X3, [0.5, 0.5], [1 / 3] * 3, temperature)
        assert np.allclose(s, softmax([9 / 4, 9 / 5], temperature), atol=1e-12)
        assert np.allclose(t, softmax([9 / 2, 3.0, 9 / 4], temperature), atol=1e-12)
        assert s[0] > s[1] and t[0] > t[1] > t[2]  # cheaper layers gain weight


def test_layer_weight_update_with_and_without_the_second_softmax():
    def softmax(xs):
        e = [math.exp(x) for x in xs]
        return [v / sum(e) for v in e]

    cost = torch.tensor(COST_2X3, dtype=torch.float64, requires_grad=True)
    for extra in (False, True):
        weights = EmdLayerWeights(2, 3, temperature=1.0, extra_softmax=extra)
        loss = weights({"hidden": cost, "attention": cost}, update=True)
        assert float(loss["hidden"].detach()) == pytest.approx(1.5)
        # the loss is sum F * D with F constant: its gradient is the plan
        loss["hidden"].backward()
        assert np.allclose(cost.grad.numpy(), PLAN_2X3)
        cost.grad = None
        # both objects propose the same weights (same cost), so their mean is that proposal
        s_once, t_once = softmax([9 / 4, 9 / 5]), softmax([9 / 2, 3.0, 9 / 4])
        s, t = weights.weights()
        want_s = softmax(s_once) if extra else s_once
        want_t = softmax(t_once) if extra else t_once
        assert np.allclose(s, want_s, atol=1e-12) and np.allclose(t, want_t, atol=1e-12)
        # eval forwards leave the weights alone
        weights({"hidden": cost}, update=False)
        assert np.allclose(weights.weights()[0], want_s, atol=1e-12)


def test_plan_of_a_non_finite_cost_is_independent_and_weights_stay():
    cost = COST_2X3.copy()
    cost[0, 0] = np.inf
    plan = transport_plan(cost, [0.5, 0.5], [1 / 3] * 3)
    assert np.allclose(plan, np.full((2, 3), 1 / 6))
    weights = EmdLayerWeights(2, 3)
    before = weights.weights()
    loss = weights({"hidden": torch.tensor(cost, dtype=torch.float32)}, update=True)["hidden"]
    assert not torch.isfinite(loss)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights.weights()))


@pytest.mark.parametrize("kl", [True, False])
def test_pairwise_attention_kl_equals_attention_kl_pair_by_pair(kl):
    from fairseq_crild import losses

    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    student = [torch.randn(3, 2, 5, 5, generator=gen, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(3, 2, 5, 5, generator=gen) for _ in range(3)]
    teacher[1] = teacher[1].masked_fill(~mask[:, None, None, :], float("-inf"))  # model's -inf
    for m in (mask, None):
        got = pairwise_attention_kl(student, teacher, m, kl=kl)
        want = torch.stack([torch.stack([losses.attention_kl(s, t, m, kl=kl) for t in teacher])
                            for s in student])
        assert got.shape == (2, 3) and torch.equal(got, want)
        g_got = torch.autograd.grad(got.sum(), student)
        g_want = torch.autograd.grad(want.sum(), student)
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(g_got, g_want))


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="3 entries for 2 layers"):
        transport_plan(COST_2X3, [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        transport_plan(COST_2X3, [1, -1], [1, 1, 1])
    with pytest.raises(ValueError, match="temperature"):
        EmdLayerWeights(2, 3, temperature=0.0)


# ----------------------------------------------------------------------------- criterion


def _dictionary():
    d = Dictionary(bos="[CLS]", pad="[PAD]", eos="[SEP]", unk="[UNK]")
    for i in range(VOCAB - 4):
        d.add_symbol(f"w{i}")
    return d


def _bert(layers, seed, dim=16, heads=2):
    torch.manual_seed(seed)
    cfg = BertConfig(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                     encoder_ffn_embed_dim=2 * dim, max_position_embeddings=32, dropout=0.0,
                     attention_dropout=0.0, pooler_dropout=0.0)
    model = BertModel(cfg, VOCAB, 1)
    model.register_classification_head("glue", num_classes=2)
    return model


class _Task:
    def __init__(self, teacher):
        self.dictionary = _dictionary()
        self.teacher = FrozenTeacher(teacher, "in-memory")
        self.current_epoch, self.num_updates = 1, 0


def _sample():
    tokens = torch.tensor([[0, 5, 6, 7, 2, 8, 2], [0, 9, 2, 10, 2, 1, 1],
                           [0, 11, 12, 2, 13, 2, 1], [0, 14, 2, 15, 16, 17, 2]])
    types_ = (torch.arange(7)[None] >= torch.tensor([[5], [3], [4], [3]])).long()
    return {"net_input": {"src_tokens": tokens, "token_type_ids": types_},
            "ntokens": int(tokens.ne(1).sum()), "nsentences": 4}


def _emd_criterion(task, student, **overrides):
    cfg = CrIldConfig(**{"max_epoch": 1, "max_update": 0, "ild_preset": "emd", **overrides})
    crit = CrIldCriterion(cfg, task)
    crit.prepare_student(student)
    return crit


def test_identical_layers_give_the_diagonal_plan_and_zero_loss():
    teacher, student = _bert(3, 0), _bert(3, 0)
    crit = _emd_criterion(_Task(teacher), student.train())
    assert crit.objects == ["attention", "hidden"] and len(crit.layer_map) == 9
    loss, n, log = crit(student, _sample())
    assert abs(float(loss.detach())) < 1e-6
    assert {"loss_attention", "loss_hidden", "loss_embedding", "emd_ws0", "emd_wt2"} <= set(log)
    for obj in ("attention", "hidden"):
        # the off-diagonal costs are > 0 (distinct random layers): the optimum is unique
        assert np.allclose(crit.emd.last_plans[obj], np.eye(3) / 3, atol=1e-12)
    # nothing to prefer when every transported cost is 0: the weights stay uniform
    s, t = crit.emd.weights()
    assert np.allclose(s, 1 / 3) and np.allclose(t, 1 / 3)


def test_emd_loss_is_the_flow_weighted_sum_of_layer_losses():
    from fairseq_crild import losses
    from fairseq_crild.models import FeatureRequest

    teacher, student = _bert(4, 0), _bert(2, 1)
    crit = _emd_criterion(_Task(teacher), student.eval(), ild_objects="hidden",
                          emd_embedding_loss="off")
    assert crit.layer_map == [(s, t) for s in range(2) for t in range(4)]
    sample = _sample()
    loss, n, log = crit(student, sample)
    request = FeatureRequest(hidden_states=True)
    with torch.no_grad():
        _, se = student(**sample["net_input"], request=request)
        _, te = teacher(**sample["net_input"], request=request)
    mask = sample["net_input"]["src_tokens"].ne(1)
    cost = np.array([[float(losses.hidden_mse(se["hidden_states"][i + 1],
                                              te["hidden_states"][j + 1], mask))
                      for j in range(4)] for i in range(2)])
    plan = transport_plan(cost, [0.5, 0.5], [0.25] * 4)
    assert np.allclose(crit.emd.last_plans["hidden"], plan, atol=1e-9)
    assert float(loss.detach()) / n == pytest.approx(float((plan * cost).sum()), rel=1e-5)
    # eval forwards do not move the weights
    s, t = crit.emd.weights()
    assert np.allclose(s, 0.5) and np.allclose(t, 0.25)


def _train_step(crit, student, sample):
    params = [p for p in list(student.parameters()) + list(crit.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss, n, _ = crit(student, sample)
    opt.zero_grad()
    (loss / n).backward()
    opt.step()
    return float(loss.detach())


def test_layer_weights_survive_a_checkpoint_round_trip(tmp_path):
    teacher, student = _bert(4, 0), _bert(2, 1)
    task = _Task(teacher)
    crit = _emd_criterion(task, student.train())
    emd_params = [p for p in crit.parameters() if p.dtype == torch.float64]
    assert len(emd_params) == 2 and not any(p.requires_grad for p in emd_params)
    for _ in range(2):
        _train_step(crit, student, _sample())
    s, t = crit.emd.weights()
    assert not np.allclose(s, 0.5) and not np.allclose(t, 0.25)  # the update moved them
    assert s.sum() == pytest.approx(1.0) and t.sum() == pytest.approx(1.0)
    crit.half()  # --fp16 halves the criterion; the weights keep float64
    assert crit.emd.student_weights.dtype == torch.float64

    path = tmp_path / "ckpt.pt"
    torch.save({"criterion": crit.state_dict(), "model": student.state_dict()}, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    student2 = _bert(2, 5)
    student2.load_state_dict(state["model"])
    crit2 = _emd_criterion(task, student2.train())
    crit2.load_state_dict(state["criterion"], strict=True)
    assert all(np.array_equal(a, b) for a, b in zip(crit2.emd.weights(), (s, t)))
    # and the resumed criterion continues exactly as the original one
    a = _train_step(crit, student, _sample())
    b = _train_step(crit2, student2, _sample())
    assert a == pytest.approx(b, rel=1e-6)
    assert all(np.allclose(x, y, atol=1e-12)
               for x, y in zip(crit.emd.weights(), crit2.emd.weights()))


# ----------------------------------------------------------------------------- fairseq-train


def test_fairseq_train_resume_continues_the_layer_weights(tiny_env, tmp_path):
    """2 updates + resume to 4 == 4 updates straight, layer weights included."""
    from tests.conftest import ROOT, run_script

    state = torch.load(str(tiny_env["ckpt"] / "model.pt"), map_location="cpu")
    gen = torch.Generator().manual_seed(0)
    dim = state["model"]["pooler.weight"].shape[0]
    state["model"]["classification_heads.glue.out_proj.weight"] = torch.randn(2, dim,
                                                                              generator=gen)
    state["model"]["classification_heads.glue.out_proj.bias"] = torch.randn(2, generator=gen)
    teacher = tmp_path / "teacher.pt"  # the tiny 4-layer BERT with a head: enough for ILD
    torch.save(state, teacher)

    def train(save_dir, updates, wait=True):
        args = [
            "-m", "fairseq_cli.train", str(tiny_env["data"]), "--user-dir", "fairseq_crild",
            "--task", "distill_glue", "--cpu", "--num-workers", "0", "--arch", "bert",
            "--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-attention-heads",
            "4", "--encoder-ffn-embed-dim", "64", "--max-position-embeddings", "128",
            "--criterion", "cr_ild", "--ild-preset", "emd", "--teacher-path", str(teacher),
            "--init-student-from", str(tiny_env["ckpt"] / "model.pt"), "--optimizer", "adam",
            "--lr", "1e-3", "--lr-scheduler", "fixed", "--batch-size", "8", "--max-positions",
            "64", "--max-update", str(updates), "--disable-validation", "--log-format",
            "simple", "--log-interval", "1", "--no-epoch-checkpoints", "--seed", "3",
            "--save-dir", str(save_dir)]
        if wait:
            return run_script(*args)
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def weights(save_dir):
        crit = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu")["criterion"]
        return crit["emd.student_weights"], crit["emd.teacher_weights"]

    full, part = tmp_path / "full", tmp_path / "part"
    runs = [train(full, 4, wait=False), train(part, 2, wait=False)]  # side by side: 2 cores
    logs = [proc.communicate()[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "emd_ws0" in logs[0]
    w2 = weights(part)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert w2[0].dtype == torch.float64 and not torch.allclose(w2[1], uniform)
    out = train(part, 4)
    assert "Loaded checkpoint" in out.stdout + out.stderr
    for resumed, straight, before in zip(weights(part), weights(full), w2):
        assert torch.allclose(resumed, straight, atol=1e-9)
        assert not torch.allclose(resumed, before)  # the resumed run did move them on
