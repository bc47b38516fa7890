"""EMD layer mapping (fairseq_crild/distill/emd.py): the transport plan, unit transport costs,
the two weight updates (``--emd-variant release`` and the fixed ``bert_emd``), the per-epoch reset,
the attention-score MSE cost, the worker average, and the layer weights across a checkpoint
(in process and through fairseq-train resume). Expected values are computed by hand in the
comments (exact fractions) or in plain float64 Python."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.distill.emd import (
    EmdLayerWeights,
    cost_attention,
    pairwise_attention_kl,
    pairwise_attention_mse,
    release_weights,
    transport_plan,
    unit_transport_costs,
)
from tests.helpers_bert import TOY_VOCAB, toy_bert, toy_dictionary
from tests.helpers_task import OneTeacherTask

VOCAB = TOY_VOCAB

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

# 3 x 3 costs whose off-diagonal 5s exceed every diagonal entry: with uniform weights the
# optimal plan is the diagonal / 3 (any off-diagonal mass replaces a cost <= 4 by 5), so the
# unit costs of both sides are the diagonals.
COST_A = np.array([[1.0, 5.0, 5.0], [5.0, 2.0, 5.0], [5.0, 5.0, 4.0]])  # units (1, 2, 4)
COST_B = np.array([[3.0, 5.0, 5.0], [5.0, 2.0, 5.0], [5.0, 5.0, 1.0]])  # units (3, 2, 1)


def _softmax(xs, t=1.0):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_hand_made_2x3_plan_is_the_known_optimum():
    plan = transport_plan(COST_2X3, [0.5, 0.5], [1 / 3, 1 / 3, 1 / 3])
    assert np.allclose(plan, PLAN_2X3, atol=1e-12)
    assert float((plan * COST_2X3).sum()) == pytest.approx(1.5, abs=1e-12)
    # unnormalised weights describe the same problem
    assert np.allclose(transport_plan(COST_2X3, [2, 2], [1, 1, 1]), PLAN_2X3, atol=1e-12)


def test_unit_transport_costs_of_a_hand_made_flow():
    # any flow, not only an optimal one: u_s[i] = sum_j F_ij C_ij / sum_j F_ij and
    # u_t[j] = sum_i F_ij C_ij / sum_i F_ij.
    flow = np.array([[0.1, 0.2, 0.0], [0.3, 0.0, 0.4]])
    cost = np.array([[2.0, 1.0, 7.0], [4.0, 9.0, 0.5]])
    # row 0: (0.2 + 0.2) / 0.3 = 4/3; row 1: (1.2 + 0.2) / 0.7 = 2
    # col 0: (0.2 + 1.2) / 0.4 = 3.5; col 1: 0.2 / 0.2 = 1; col 2: 0.2 / 0.4 = 0.5
    u_s, u_t = unit_transport_costs(flow, cost)
    assert np.allclose(u_s, [4 / 3, 2.0], atol=1e-12)
    assert np.allclose(u_t, [3.5, 1.0, 0.5], atol=1e-12)
    # a layer that ships nothing is charged its cheapest pair
    flow0 = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    u_s0, u_t0 = unit_transport_costs(flow0, cost)
    assert u_s0[1] == 0.5 and u_t0[2] == 0.5
    assert u_s0[0] == pytest.approx(1.5) and u_t0[1] == pytest.approx(1.0)


def test_release_weights_are_inverse_unit_costs_normalised():
    # student unit costs on PLAN_2X3: (1/3*1 + 1/6*2) / (1/2) = 4/3, (1/6*1 + 1/3*2) / (1/2)
    # = 5/3 -> 1/u = (3/4, 3/5), normalised (5/9, 4/9).
    # teacher: 1, (1/6*2 + 1/6*1) / (1/3) = 3/2, 2 -> 1/u = (1, 2/3, 1/2) -> (6, 4, 3) / 13.
    s, t = release_weights(PLAN_2X3, COST_2X3, [0.5, 0.5], [1 / 3] * 3)
    assert np.allclose(s, [5 / 9, 4 / 9], atol=1e-12)
    assert np.allclose(t, [6 / 13, 4 / 13, 3 / 13], atol=1e-12)
    # COST_A: units (1, 2, 4) on both sides -> (1, 1/2, 1/4) / (7/4) = (4, 2, 1) / 7
    plan = transport_plan(COST_A, [1 / 3] * 3, [1 / 3] * 3)
    assert np.allclose(plan, np.eye(3) / 3, atol=1e-12)
    s, t = release_weights(plan, COST_A, [1 / 3] * 3, [1 / 3] * 3)
    assert np.allclose(s, [4 / 7, 2 / 7, 1 / 7], atol=1e-12) and np.allclose(t, s)
    # no softmax, no temperature: doubling every cost leaves the weights as they are
    s2, _ = release_weights(plan, 2 * COST_A, [1 / 3] * 3, [1 / 3] * 3)
    assert np.allclose(s2, s, atol=1e-12)


def test_release_variant_keeps_separate_weights_per_object():
    weights = EmdLayerWeights(3, 3, ["attention", "hidden"], variant="release")
    costs = {"attention": torch.tensor(COST_A), "hidden": torch.tensor(COST_B)}
    loss = weights(costs, update=True)
    assert float(loss["attention"]) == pytest.approx(7 / 3)  # (1 + 2 + 4) / 3
    assert float(loss["hidden"]) == pytest.approx(2.0)       # (3 + 2 + 1) / 3
    s_a, t_a = weights.weights("attention")
    s_h, t_h = weights.weights("hidden")
    assert np.allclose(s_a, [4 / 7, 2 / 7, 1 / 7], atol=1e-12) and np.allclose(t_a, s_a)
    # COST_B: units (3, 2, 1) -> (1/3, 1/2, 1) / (11/6) = (2, 3, 6) / 11
    assert np.allclose(s_h, [2 / 11, 3 / 11, 6 / 11], atol=1e-12) and np.allclose(t_h, s_h)
    # the next step solves each object's flow from that object's own weights: for hidden
    # the supplies (2, 3, 6)/11 equal the demands, so the plan stays the diagonal and the
    # unit costs, hence the weights, stay the same
    weights(costs, update=True)
    assert np.allclose(weights.last_plans["hidden"], np.diag([2, 3, 6]) / 11, atol=1e-12)
    assert np.allclose(weights.weights("hidden")[0], [2 / 11, 3 / 11, 6 / 11], atol=1e-12)
    log = weights.log_values(2.0)
    assert log["emd_hidden_ws2"] == pytest.approx(12 / 11)
    assert log["emd_attention_wt0"] == pytest.approx(8 / 7)
    with pytest.raises(ValueError, match="no layer weights for object 'cls'"):
        weights({"cls": torch.tensor(COST_A)}, update=True)


def test_release_weights_reset_to_uniform_at_each_new_epoch():
    weights = EmdLayerWeights(3, 3, ["hidden"], variant="release")
    assert weights.begin_epoch(1)  # first epoch: a reset of what is uniform anyway
    weights({"hidden": torch.tensor(COST_A)}, update=True)
    moved = weights.weights()
    assert not weights.begin_epoch(1)  # same epoch: the weights carry on
    assert all(np.array_equal(a, b) for a, b in zip(moved, weights.weights()))
    assert weights.begin_epoch(2) and int(weights.epoch) == 2
    assert all(np.allclose(w, 1 / 3) for w in weights.weights())
    # bert_emd keeps its weights across epochs
    shared = EmdLayerWeights(3, 3, variant="bert_emd")
    shared({"hidden": torch.tensor(COST_A)}, update=True)
    before = shared.weights()
    assert not shared.begin_epoch(2)
    assert all(np.array_equal(a, b) for a, b in zip(before, shared.weights()))


def test_cost_attention_on_the_2x3_plan():
    # student unit costs: (1/3*1 + 1/6*2) / (1/2) = 4/3 and (1/6*1 + 1/3*2) / (1/2) = 5/3;
    # sum 3, so w~ = (3 / (4/3), 3 / (5/3)) = (9/4, 9/5), then softmax(w~ / T).
    # teacher unit costs: (1/3*1) / (1/3) = 1, (1/6*2 + 1/6*1) / (1/3) = 3/2, (1/3*2)/(1/3) = 2;
    # sum 9/2, so w~ = (9/2, 3, 9/4).
    for temperature in (1.0, 0.5):
        s, t = cost_attention(PLAN_2X3, COST_2X3, [0.5, 0.5], [1 / 3] * 3, temperature)
        assert np.allclose(s, _softmax([9 / 4, 9 / 5], temperature), atol=1e-12)
        assert np.allclose(t, _softmax([9 / 2, 3.0, 9 / 4], temperature), atol=1e-12)
        assert s[0] > s[1] and t[0] > t[1] > t[2]  # cheaper layers gain weight


def test_bert_emd_weights_follow_the_costs_without_the_second_softmax():
    # COST_A units (1, 2, 4), sum 7: w~ = (7, 7/2, 7/4); COST_B units (3, 2, 1): w~ = (2, 3, 6)
    want = {"A": _softmax([7.0, 3.5, 1.75]), "B": _softmax([2.0, 3.0, 6.0])}
    got = {}
    for name, cost in (("A", COST_A), ("B", COST_B)):
        weights = EmdLayerWeights(3, 3, variant="bert_emd")  # the default: no extra softmax
        assert not weights.extra_softmax
        weights({"hidden": torch.tensor(cost), "attention": torch.tensor(cost)}, update=True)
        got[name] = weights.weights()[0]
        assert np.allclose(got[name], want[name], atol=1e-12)
    assert got["A"][0] > got["A"][1] > got["A"][2]  # cheapest layer first
    assert got["B"][2] > got["B"][1] > got["B"][0]
    assert not np.allclose(got["A"], got["B"], atol=0.1)  # the costs moved them
    assert got["A"][0] > 0.9  # far from the pinned e/(e+2) = 0.576


def test_the_second_softmax_pins_the_weights_near_e_to_1():
    # what --emd-extra-softmax on does (kept as an option): softmax of weights in [0, 1];
    # when the first softmax is nearly one-hot the result is about (e, 1, 1) / (e + 2)
    pinned = math.e / (math.e + 2)
    tops = []
    for cost in (COST_A, COST_B, 10 * COST_A):
        weights = EmdLayerWeights(3, 3, variant="bert_emd", extra_softmax=True)
        weights({"hidden": torch.tensor(cost)}, update=True)
        s = weights.weights()[0]
        units = np.diag(cost)  # the diagonal plan's unit costs; w~ = sum(u) / u
        assert np.allclose(s, _softmax(_softmax(list(units.sum() / units))), atol=1e-12)
        tops.append(s.max())
    assert all(abs(top - pinned) < 0.03 for top in tops)


def test_layer_weight_update_with_and_without_the_second_softmax():
    cost = torch.tensor(COST_2X3, dtype=torch.float64, requires_grad=True)
    for extra in (False, True):
        weights = EmdLayerWeights(2, 3, variant="bert_emd", temperature=1.0,
                                  extra_softmax=extra)
        loss = weights({"hidden": cost, "attention": cost}, update=True)
        assert float(loss["hidden"].detach()) == pytest.approx(1.5)
        # the loss is sum F * D with F constant: its gradient is the plan
        loss["hidden"].backward()
        assert np.allclose(cost.grad.numpy(), PLAN_2X3)
        cost.grad = None
        # both objects propose the same weights (same cost), so their mean is that proposal
        s_once, t_once = _softmax([9 / 4, 9 / 5]), _softmax([9 / 2, 3.0, 9 / 4])
        s, t = weights.weights()
        want_s = _softmax(s_once) if extra else s_once
        want_t = _softmax(t_once) if extra else t_once
        assert np.allclose(s, want_s, atol=1e-12) and np.allclose(t, want_t, atol=1e-12)
        # eval forwards leave the weights alone
        weights({"hidden": cost}, update=False)
        assert np.allclose(weights.weights()[0], want_s, atol=1e-12)


def test_plan_of_a_non_finite_cost_is_independent_and_weights_stay():
    cost = COST_2X3.copy()
    cost[0, 0] = np.inf
    plan = transport_plan(cost, [0.5, 0.5], [1 / 3] * 3)
    assert np.allclose(plan, np.full((2, 3), 1 / 6))
    for variant in ("release", "bert_emd"):
        weights = EmdLayerWeights(2, 3, variant=variant)
        before = weights.weights()
        loss = weights({"hidden": torch.tensor(cost, dtype=torch.float32)}, update=True)
        assert not torch.isfinite(loss["hidden"])
        assert all(np.array_equal(a, b) for a, b in zip(before, weights.weights()))


def test_pairwise_attention_mse_by_hand():
    # B = 1, H = 1, L = 2, the second token padded: only the (0, 0) entry counts
    s = [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.tensor([[[[0.0, 9.0], [9.0, 9.0]]]])]
    t = [torch.tensor([[[[4.0, float("-inf")], [1.0, float("-inf")]]]])]
    mask = torch.tensor([[True, False]])
    got = pairwise_attention_mse(s, t, mask)
    assert got.shape == (2, 1)
    assert got[0, 0].item() == pytest.approx(9.0) and got[1, 0].item() == pytest.approx(16.0)
    # no mask: every entry counts, non-finite scores count as 0 in both models
    # (1-4)^2 + (2-0)^2 + (3-1)^2 + (4-0)^2 = 9 + 4 + 4 + 16 = 33 over 4 entries
    got = pairwise_attention_mse(s, t, None)
    assert got[0, 0].item() == pytest.approx(33 / 4)
    # B = 2, H = 2, random, real lengths 3 and 2 of L = 3, against a plain-Python loop
    gen = torch.Generator().manual_seed(0)
    s = [torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64).float() for _ in range(2)]
    t = [torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64).float() for _ in range(3)]
    lengths = [3, 2]
    mask = torch.tensor([[True, True, True], [True, True, False]])
    got = pairwise_attention_mse(s, t, mask)
    for i in range(2):
        for j in range(3):
            total, count = 0.0, 0
            for b in range(2):
                for h in range(2):
                    for q in range(lengths[b]):
                        for k in range(lengths[b]):
                            total += (float(s[i][b, h, q, k]) - float(t[j][b, h, q, k])) ** 2
                            count += 1
            assert got[i, j].item() == pytest.approx(total / count, rel=1e-6)
    # the gradient of a masked-out entry is 0 and finite
    x = s[0].clone().requires_grad_(True)
    pairwise_attention_mse([x], t, mask).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[1, :, 2] == 0)


@pytest.mark.parametrize("kl", [True, False])
def test_pairwise_attention_kl_equals_attention_kl_pair_by_pair(kl):
    from fairseq_crild.distill import losses

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


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="3 entries for 2 layers"):
        transport_plan(COST_2X3, [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        transport_plan(COST_2X3, [1, -1], [1, 1, 1])
    with pytest.raises(ValueError, match="temperature"):
        EmdLayerWeights(2, 3, variant="bert_emd", temperature=0.0)
    with pytest.raises(ValueError, match="--emd-variant"):
        EmdLayerWeights(2, 3, variant="paper")
    with pytest.raises(ValueError, match="--emd-variant bert_emd"):
        EmdLayerWeights(2, 3, variant="release", extra_softmax=True)


def test_a_checkpoint_of_the_other_variant_is_refused_and_old_ones_load():
    shared = EmdLayerWeights(2, 3, variant="bert_emd")
    release = EmdLayerWeights(2, 3, ["hidden"], variant="release")
    with pytest.raises(ValueError, match="--emd-variant bert_emd"):
        release.load_state_dict(shared.state_dict())
    with pytest.raises(ValueError, match="--emd-variant release"):
        shared.load_state_dict(release.state_dict())
    old = {k: v for k, v in shared.state_dict().items() if k != "epoch"}  # before emd.epoch
    old["student_weights"] = torch.tensor([0.25, 0.75], dtype=torch.float64)
    shared.load_state_dict(old, strict=True)
    assert np.allclose(shared.weights()[0], [0.25, 0.75]) and int(shared.epoch) == 0


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    # rank 0 sees COST_A + 1, rank 1 COST_A - 1 (other off-diagonals), mean COST_A
    cost = torch.tensor(COST_A + (1.0 if rank == 0 else -1.0) * np.array(
        [[0, 0, 1], [0, 0, 0], [0, 1, 0]]))
    weights = EmdLayerWeights(3, 3, ["hidden"], variant="release")
    weights({"hidden": cost}, update=True)
    np.save(os.path.join(out_dir, f"w{rank}.npy"), np.stack(weights.weights()))
    dist.destroy_process_group()


def test_workers_average_costs_and_agree_on_the_weights(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = np.load(tmp_path / "w0.npy"), np.load(tmp_path / "w1.npy")
    assert np.array_equal(w0, w1)
    # the mean cost is COST_A: (4, 2, 1) / 7 on both sides (alone, rank 0 would differ)
    assert np.allclose(w0, [[4 / 7, 2 / 7, 1 / 7]] * 2, atol=1e-12)


# ----------------------------------------------------------------------------- criterion


_dictionary = toy_dictionary


def _bert(layers, seed, dim=16, heads=2):
    return toy_bert(layers, dim, heads, seed)


_Task = OneTeacherTask  # the criterion–task contract, one in-memory teacher


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
    assert crit.options.objects == ["attention", "hidden"] and len(crit.layers.layer_map) == 9
    assert crit.emd.variant == "release"  # the preset's default
    if crit.projection is not None:  # an identity fit_dense keeps the layers identical
        with torch.no_grad():
            crit.projection.weight.copy_(torch.eye(16))
            crit.projection.bias.zero_()
    loss, n, log = crit(student, _sample())
    assert abs(float(loss.detach())) < 1e-6
    assert {"loss_attention", "loss_hidden", "loss_embedding", "emd_attention_ws0",
            "emd_hidden_wt2"} <= set(log)
    for obj in ("attention", "hidden"):
        # the off-diagonal costs are > 0 (distinct random layers): the optimum is unique
        assert np.allclose(crit.emd.last_plans[obj], np.eye(3) / 3, atol=1e-12)
        # nothing to prefer when every transported cost is 0: the weights stay uniform
        s, t = crit.emd.weights(obj)
        assert np.allclose(s, 1 / 3) and np.allclose(t, 1 / 3)


def _features(student, teacher, sample):
    from fairseq_crild.models import FeatureRequest

    request = FeatureRequest(hidden_states=True, attention_scores=frozenset(range(4)))
    with torch.no_grad():
        _, se = student(**sample["net_input"], request=request)
        _, te = teacher(**sample["net_input"], request=request)
    return se, te


def test_release_loss_uses_attention_score_mse_and_hidden_mse():
    teacher, student = _bert(4, 0), _bert(2, 1)
    crit = _emd_criterion(_Task(teacher), student.eval(), emd_embedding_loss="off")
    sample = _sample()
    loss, n, log = crit(student, sample)
    se, te = _features(student, teacher, sample)
    mask = sample["net_input"]["src_tokens"].ne(1)
    lengths = mask.sum(1).tolist()
    proj = crit.projection

    def att_mse(a, b):  # plain float64 loop over real (query, key) pairs
        total, count = 0.0, 0
        a, b = a.double(), b.double()
        for bi, n_real in enumerate(lengths):
            diff = a[bi, :, :n_real, :n_real] - b[bi, :, :n_real, :n_real]
            total += float(diff.square().sum())
            count += diff.numel()
        return total / count

    def hid_mse(a, b):
        if proj is not None:
            with torch.no_grad():
                a = proj(a)
        return float((a.double() - b.double())[mask].square().mean())

    cost = {"attention": np.array([[att_mse(se["attention_scores"][i], te["attention_scores"][j])
                                    for j in range(4)] for i in range(2)]),
            "hidden": np.array([[hid_mse(se["hidden_states"][i + 1], te["hidden_states"][j + 1])
                                 for j in range(4)] for i in range(2)])}
    total = 0.0
    for obj, c in cost.items():
        plan = transport_plan(c, [0.5, 0.5], [0.25] * 4)
        assert np.allclose(crit.emd.last_plans[obj], plan, atol=1e-9)
        assert float(log[f"loss_{obj}"]) / n == pytest.approx(float((plan * c).sum()), rel=1e-5)
        total += float((plan * c).sum())
    assert float(loss.detach()) / n == pytest.approx(total, rel=1e-5)
    # eval forwards do not move the weights
    s, t = crit.emd.weights("hidden")
    assert np.allclose(s, 0.5) and np.allclose(t, 0.25)


def test_emd_loss_is_the_flow_weighted_sum_of_layer_losses():
    from fairseq_crild.distill import losses

    teacher, student = _bert(4, 0), _bert(2, 1)
    crit = _emd_criterion(_Task(teacher), student.eval(), ild_objects="hidden",
                          emd_embedding_loss="off", emd_variant="bert_emd")
    assert crit.layers.layer_map == [(s, t) for s in range(2) for t in range(4)]
    sample = _sample()
    loss, n, log = crit(student, sample)
    se, te = _features(student, teacher, sample)
    mask = sample["net_input"]["src_tokens"].ne(1)

    def student_state(i):
        h = se["hidden_states"][i + 1]
        if crit.projection is None:
            return h
        with torch.no_grad():
            return crit.projection(h)

    cost = np.array([[float(losses.hidden_mse(student_state(i), te["hidden_states"][j + 1],
                                              mask))
                      for j in range(4)] for i in range(2)])
    plan = transport_plan(cost, [0.5, 0.5], [0.25] * 4)
    assert np.allclose(crit.emd.last_plans["hidden"], plan, atol=1e-9)
    assert float(loss.detach()) / n == pytest.approx(float((plan * cost).sum()), rel=1e-5)
    assert "emd_ws0" in log and "emd_wt3" in log
    s, t = crit.emd.weights()
    assert np.allclose(s, 0.5) and np.allclose(t, 0.25)


def test_criterion_resets_release_weights_when_the_epoch_changes():
    teacher, student = _bert(4, 0), _bert(2, 1)
    task = _Task(teacher)
    crit = _emd_criterion(task, student.train(), emd_embedding_loss="off")
    crit(student, _sample())  # epoch 1, from uniform; no optimizer step: same costs below
    first = {obj: crit.emd.weights(obj) for obj in ("attention", "hidden")}
    assert not np.allclose(first["hidden"][0], 0.5)
    crit(student, _sample())  # same epoch: the flow starts from the moved weights
    for obj in ("attention", "hidden"):
        plan = crit.emd.last_plans[obj]
        assert np.allclose(plan.sum(1), first[obj][0], atol=1e-12)
        assert np.allclose(plan.sum(0), first[obj][1], atol=1e-12)
    assert not np.allclose(first["attention"][0], first["hidden"][0])  # separate weights
    task.current_epoch = 2  # what distill_glue's begin_epoch does
    crit(student, _sample())  # reset to uniform, then the same update as the first forward
    for obj in ("attention", "hidden"):
        plan = crit.emd.last_plans[obj]
        assert np.allclose(plan.sum(1), 0.5, atol=1e-12)
        assert np.allclose(plan.sum(0), 0.25, atol=1e-12)
        assert all(np.allclose(a, b, atol=1e-12) for a, b in zip(crit.emd.weights(obj),
                                                                  first[obj]))
    assert int(crit.emd.epoch) == 2


def _train_step(crit, student, sample):
    params = [p for p in list(student.parameters()) + list(crit.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss, n, _ = crit(student, sample)
    opt.zero_grad()
    (loss / n).backward()
    opt.step()
    return float(loss.detach())


@pytest.mark.parametrize("variant", ["release", "bert_emd"])
def test_layer_weights_survive_a_checkpoint_round_trip(tmp_path, variant):
    teacher, student = _bert(4, 0), _bert(2, 1)
    task = _Task(teacher)
    crit = _emd_criterion(task, student.train(), emd_variant=variant)
    emd_params = [p for p in crit.parameters() if p.dtype == torch.float64]
    assert len(emd_params) == (4 if variant == "release" else 2)
    assert not any(p.requires_grad for p in emd_params)
    for _ in range(2):
        _train_step(crit, student, _sample())
    obj = "hidden" if variant == "release" else None
    s, t = crit.emd.weights(obj)
    assert not np.allclose(s, 0.5) and not np.allclose(t, 0.25)  # the update moved them
    assert s.sum() == pytest.approx(1.0) and t.sum() == pytest.approx(1.0)
    crit.half()  # --fp16 halves the criterion; the weights keep float64
    assert all(p.dtype == torch.float64 for p in crit.emd.parameters())
    crit.float()  # back to the fp32 student of this test (a projection was halved too)
    assert all(p.dtype == torch.float64 for p in crit.emd.parameters())

    path = tmp_path / "ckpt.pt"
    torch.save({"criterion": crit.state_dict(), "model": student.state_dict()}, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert int(state["criterion"]["emd.epoch"]) == 1
    student2 = _bert(2, 5)
    student2.load_state_dict(state["model"])
    crit2 = _emd_criterion(task, student2.train(), emd_variant=variant)
    crit2.load_state_dict(state["criterion"], strict=True)
    assert all(np.array_equal(a, b) for a, b in zip(crit2.emd.weights(obj), (s, t)))
    # and the resumed criterion continues exactly as the original one (same epoch: no reset)
    a = _train_step(crit, student, _sample())
    b = _train_step(crit2, student2, _sample())
    assert a == pytest.approx(b, rel=1e-6)
    assert all(np.allclose(x, y, atol=1e-12)
               for x, y in zip(crit.emd.weights(obj), crit2.emd.weights(obj)))


# ----------------------------------------------------------------------------- fairseq-train


def test_fairseq_train_resume_continues_the_layer_weights(tiny_env, tmp_path):
    """2 updates + resume to 4 == 4 updates straight, layer weights included, across an
    epoch boundary (the release weights reset there; the resumed run must not reset at its
    first forward, in the middle of epoch 1)."""
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
            "--lr", "1e-3", "--lr-scheduler", "fixed", "--batch-size", "16", "--max-positions",
            "64", "--max-update", str(updates), "--disable-validation", "--log-format",
            "simple", "--log-interval", "1", "--no-epoch-checkpoints", "--seed", "3",
            "--save-dir", str(save_dir)]
        if wait:
            return run_script(*args)
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def weights(save_dir):
        crit = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu")["criterion"]
        return [crit[f"emd.{obj}_{side}_weights"] for obj in ("attention", "hidden")
                for side in ("student", "teacher")], int(crit["emd.epoch"])

    full, part = tmp_path / "full", tmp_path / "part"
    runs = [train(full, 4, wait=False), train(part, 2, wait=False)]  # side by side: 2 cores
    logs = [proc.communicate()[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "emd_hidden_ws0" in logs[0]
    w2, epoch2 = weights(part)
    assert epoch2 == 1 and all(w.dtype == torch.float64 for w in w2)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert not torch.allclose(w2[3], uniform)
    w_full, epoch_full = weights(full)
    assert epoch_full == 2, "the 4-update run must cross into epoch 2 (3 batches an epoch)"
    out = train(part, 4)
    assert "Loaded checkpoint" in out.stdout + out.stderr
    w4, epoch4 = weights(part)
    assert epoch4 == 2
    for resumed, straight, before in zip(w4, w_full, w2):
        assert torch.allclose(resumed, straight, atol=1e-9)
        assert not torch.allclose(resumed, before)  # the resumed run did move them on
