"""The relation memo of cr_ild (RelationMemo): the ILD and consistency terms computed with
shared Q/K/V relation log-probabilities give the values computed afresh, bit for bit, and
the gradients up to rounding, with fewer relation computations."""

from functools import partial

import pytest
import torch

from fairseq_crild.criterions.cr_ild import CrIldCriterion
from fairseq_crild.criterions.ild_distance import RelationMemo
from fairseq_crild.distill import losses
from tests.helpers_criterion import both_ways
from tests.test_distill_criterions import _bert, _sample, _Task
from tests.test_fidelity_criterion import _crit


def _features(partner_mode):
    gen = torch.Generator().manual_seed(0)
    b, length, d_s, d_t = 6, 9, 16, 24
    keep = torch.arange(length)[None] < torch.tensor([[9], [4], [7], [2], [9], [5]])
    if partner_mode == "reverse":
        partner = torch.arange(b - 1, -1, -1)
    else:  # no involution: mask[partner] != mask
        partner = torch.tensor([1, 2, 0, 4, 5, 3])
    mixed_keep = keep | keep[partner]
    x_s = torch.randn(b, length, d_s, generator=gen, requires_grad=True)
    x_t = torch.randn(b, length, d_t, generator=gen)
    clean = torch.randn(b, length, d_s, generator=gen)
    return x_s, x_t, clean, partner, mixed_keep


def _ild_plus_consistency(x_s, x_t, clean, partner, keep, memo):
    log_probs = memo.log_probs if memo is not None else None
    ild = losses.relation_kl(x_s, x_t, keep, 4, log_probs=log_probs)
    cons = losses.consistency_loss(
        partial(losses.relation_kl, num_relation_heads=4, log_probs=log_probs), x_s, clean,
        partner, 0.7, keep, memo.gather if memo is not None else None)
    return ild, cons


@pytest.mark.parametrize("partner_mode,fresh_calls", [("reverse", 3), ("random", 4)])
def test_memo_gives_the_same_values_with_fewer_relations(monkeypatch, partner_mode,
                                                         fresh_calls):
    calls = []
    real = losses.relation_log_probs

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "relation_log_probs", counting)
    x_s, x_t, clean, partner, keep = _features(partner_mode)
    ild0, cons0 = _ild_plus_consistency(x_s, x_t, clean, partner, keep, None)
    (g0,) = torch.autograd.grad(ild0 + cons0, x_s)
    assert len(calls) == 6  # student three times, teacher, clean, clean of the partner
    calls.clear()
    ild1, cons1 = _ild_plus_consistency(x_s, x_t, clean, partner, keep, RelationMemo())
    (g1,) = torch.autograd.grad(ild1 + cons1, x_s)
    # the student's side once; the partner's clean side gathered when mask[partner] == mask
    assert len(calls) == fresh_calls
    assert torch.equal(ild0, ild1) and torch.equal(cons0, cons1)
    torch.testing.assert_close(g1, g0, rtol=1e-6, atol=1e-6 * g0.abs().max().item())


def test_the_same_relations_as_the_divergence_of_row_divergence():
    """relation_kl's masked path (no guards: finite relations) gives the guarded divergence."""
    x_s, x_t, _, _, keep = _features("reverse")
    rel_s = losses._self_relations(x_s, 4, "student", keep)
    rel_t = losses._self_relations(x_t, 4, "teacher", keep)
    old = losses._row_divergence(rel_s, rel_t, keep[:, None, None, :], keep[:, None, :, None],
                                 True)
    assert torch.equal(losses.relation_kl(x_s, x_t, keep, 4), old)


def test_cr_ild_step_with_and_without_the_memo():
    """The cr_ild preset's step (ILD + consistency on Q/K/V): the same loss and logged
    terms bit for bit, gradients equal up to fp32 rounding of a different summation order
    (here within 1e-5 of the largest gradient: this toy's 4-wide relation heads give large
    relation logits; 1.6e-7 measured on the benchmark's MiniLM step)."""
    teacher, student = _bert(4, 16, 4, 0), _bert(2, 16, 4, 1)
    task = _Task(teacher)
    task.current_epoch, task.num_updates = 3, 5
    sample = _sample()
    crit = _crit(task, student.train(), ild_preset="cr_ild", num_relation_heads=4)
    assert CrIldCriterion.share_relations  # the default
    (log0, g0, _), (log1, g1, _) = both_ways(crit, student, sample, "share_relations")
    assert float(log0["loss_cons"]) > 0
    assert all(torch.equal(log0[k], log1[k]) for k in log0 if torch.is_tensor(log0[k]))
    scale = max(g.abs().max().item() for g in g0.values())
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, rtol=0, atol=1e-5 * scale, msg=name)
