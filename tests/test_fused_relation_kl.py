"""The fused Q/K/V relation KL (losses.relation_side / relation_kl_from_sides): the values of
the former autograd computation bit for bit, gradients (student and teacher side) equal to
a float64 autograd reference written out here, and the cr_ild step unchanged but for
rounding."""

import math

import pytest
import torch

from fairseq_crild.criterions.cr_ild import CrIldCriterion
from fairseq_crild.distill import losses
from tests.helpers_criterion import both_ways
from tests.test_distill_criterions import _bert, _sample, _Task
from tests.test_fidelity_criterion import _crit


def _inputs(teacher_grad: bool = False):
    gen = torch.Generator().manual_seed(3)
    b, length, d_s, d_t = 4, 7, 12, 18
    keep = torch.arange(length)[None] < torch.tensor([[7], [3], [5], [1]])
    x_s = torch.randn(b, length, d_s, generator=gen, requires_grad=True)
    x_t = torch.randn(b, length, d_t, generator=gen, requires_grad=teacher_grad)
    return x_s, x_t, keep


def _reference_kl(x_s: torch.Tensor, x_t: torch.Tensor, keep: torch.Tensor,
                  heads: int) -> torch.Tensor:
    """MiniLMv2's relation KL in float64, row by row from the definition: for every example,
    relation head and real query, KL over the real keys of softmax(X_r X_r^T / sqrt(d_r))."""
    total, rows = 0.0, 0
    for b in range(x_s.shape[0]):
        real = keep[b].nonzero().flatten()
        for r in range(heads):
            def rel(x: torch.Tensor) -> torch.Tensor:
                d_r = x.shape[-1] // heads
                xr = x[b, real, r * d_r:(r + 1) * d_r].double()
                return xr @ xr.T / math.sqrt(d_r)
            logp_s = torch.log_softmax(rel(x_s), dim=-1)
            logp_t = torch.log_softmax(rel(x_t), dim=-1)
            total = total + (logp_t.exp() * (logp_t - logp_s)).sum()
            rows += len(real)
    return total / rows


@pytest.mark.parametrize("teacher_grad", [False, True])
def test_fused_matches_the_float64_reference_and_the_former_path(teacher_grad):
    x_s, x_t, keep = _inputs(teacher_grad)
    wrt = (x_s, x_t) if teacher_grad else (x_s,)
    fused = losses.relation_kl(x_s, x_t, keep, 3)
    former = losses.relation_kl_from_log_probs(
        losses.relation_side(x_s, 3, keep, fused=False).log_probs,
        losses.relation_side(x_t, 3, keep, fused=False).log_probs, keep)
    assert torch.equal(fused, former)  # the same forward arithmetic
    reference = _reference_kl(x_s, x_t, keep, 3)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-5)
    g_fused = torch.autograd.grad(fused, wrt)
    g_ref = torch.autograd.grad(reference, wrt)
    g_former = torch.autograd.grad(former, wrt)
    for got, ref, old in zip(g_fused, g_ref, g_former):
        scale = ref.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(got, old, rtol=0, atol=1e-6 * scale)
    # padded positions get no gradient
    assert torch.all(g_fused[0][~keep] == 0)


def test_include_mode_fused_matches_the_former_divergence_and_the_reference():
    """The authors' padding ("include": no mask, every row and key counts)."""
    x_s, x_t, keep = _inputs(teacher_grad=True)
    fused = losses.relation_kl(x_s, x_t, keep, 3, pad_mask_mode="include")
    former = losses._row_divergence(losses._self_relations(x_s, 3, "student"),
                                    losses._self_relations(x_t, 3, "teacher"), None, None,
                                    True)
    assert torch.equal(fused, former)
    everything = torch.ones_like(keep)
    reference = _reference_kl(x_s, x_t, everything, 3)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-5)
    for got, ref, old in zip(torch.autograd.grad(fused, (x_s, x_t)),
                             torch.autograd.grad(reference, (x_s, x_t)),
                             torch.autograd.grad(former, (x_s, x_t))):
        scale = ref.abs().max().item()
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(got, old, rtol=0, atol=1e-6 * scale)


def test_a_fused_side_against_an_unfused_one_still_gets_its_gradient():
    x_s, x_t, keep = _inputs(teacher_grad=True)
    fused_s = losses.relation_side(x_s, 3, keep, fused=True)
    unfused_t = losses.relation_side(x_t, 3, keep, fused=False)
    mixed = losses.relation_kl_from_sides(fused_s, unfused_t, keep)
    reference = _reference_kl(x_s, x_t, keep, 3)
    for got, ref in zip(torch.autograd.grad(mixed, (x_s, x_t)),
                        torch.autograd.grad(reference, (x_s, x_t))):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_unfused_sides_without_gradients_give_the_value():
    """An evaluation pass (no_grad) with unfused sides: the former computation's value."""
    x_s, x_t, keep = _inputs()
    with torch.no_grad():
        got = losses.relation_kl_from_sides(losses.relation_side(x_s, 3, keep, fused=False),
                                            losses.relation_side(x_t, 3, keep, fused=False),
                                            keep)
    assert torch.equal(got, losses.relation_kl(x_s, x_t, keep, 3).detach())


def test_weighted_terms_sharing_one_side_sum_their_gradients():
    """The memo's case: one student side distilled against three targets with weights."""
    x_s, x_t, keep = _inputs()
    gen = torch.Generator().manual_seed(4)
    others = [x_t, torch.randn(x_s.shape, generator=gen), torch.randn(x_s.shape, generator=gen)]
    weights = (1.0, 0.3, 0.05)
    side = losses.relation_side(x_s, 3, keep)
    total = sum(w * losses.relation_kl_from_sides(side, losses.relation_side(o, 3, keep), keep)
                for w, o in zip(weights, others))
    reference = sum(w * _reference_kl(x_s, o, keep, 3) for w, o in zip(weights, others))
    (got,) = torch.autograd.grad(total, x_s)
    (ref,) = torch.autograd.grad(reference, x_s)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


class _PaddingTask(_Task):
    """cr_ild_release asks the task to pad every batch (the authors' fixed grid); the toy
    sample is what it is, so the unmasked relations run over its own length."""

    def pad_every_batch_to(self, length: int) -> None:
        self.padded_to = length


@pytest.mark.parametrize("preset", ["cr_ild", "cr_ild_release"])
def test_cr_ild_step_fused_and_unfused(preset):
    """The preset's step (cr_ild: masked relations, ILD + consistency; cr_ild_release: the
    authors' unmasked relations on mixup inputs): loss and logged terms bit for bit,
    gradients equal up to fp32 rounding (closed-form softmax Jacobian instead of
    autograd's)."""
    teacher, student = _bert(4, 16, 4, 0), _bert(2, 16, 4, 1)
    task = _PaddingTask(teacher)
    task.current_epoch, task.num_updates = 3, 5
    crit = _crit(task, student.train(), ild_preset=preset, num_relation_heads=4)
    assert CrIldCriterion.fuse_relation_kl  # the default
    (log0, g0, _), (log1, g1, _) = both_ways(crit, student, _sample(), "fuse_relation_kl")
    assert float(log0["loss_ild"]) > 0
    if preset == "cr_ild":
        assert float(log0["loss_cons"]) > 0
    assert all(torch.equal(log0[k], log1[k]) for k in log0 if torch.is_tensor(log0[k]))
    scale = max(g.abs().max().item() for g in g0.values())
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, rtol=0, atol=1e-5 * scale, msg=name)
