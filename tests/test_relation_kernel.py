"""The fused C++ relation KL (``--relation-kl-impl cpp``): its exponential, masked
log-softmax and KL, values and gradients, against float64 references written from the
definitions; the same through relation_kl, the memo and the cr_ild step; its errors."""

import math

import pytest
import torch

from fairseq_crild.criterions.ild_distance import RelationMemo
from fairseq_crild.distill import losses
from fairseq_crild.distill import relation_kernel as rk
from tests.test_distill_criterions import _bert, _sample, _Task
from tests.test_fidelity_criterion import _crit


def _keep():
    """Right padding, a row with one key, an element with no key, left padding."""
    lengths = torch.tensor([[7], [1], [5], [7]])
    keep = torch.arange(7)[None] < lengths
    keep[2] = torch.tensor([False, False, True, True, True, True, True])
    keep[1] = False
    keep[1, 3] = True
    empty = torch.zeros(1, 7, dtype=torch.bool)
    return torch.cat([keep, empty])


def _relations(gen, keep, heads=3):
    return torch.randn(keep.shape[0], heads, keep.shape[1], keep.shape[1], generator=gen) * 4


def _log_softmax64(x, keep):
    """Plain loops: log-softmax over kept keys, -inf at masked ones, uniform without keys."""
    b, r, length, _ = x.shape
    out = torch.empty(x.shape, dtype=torch.float64)
    for i in range(b):
        kept = [j for j in range(length) if keep[i, j]]
        for h in range(r):
            for q in range(length):
                if not kept:
                    out[i, h, q] = -math.log(length)
                    continue
                row = [float(x[i, h, q, j]) for j in kept]
                m = max(row)
                lse = m + math.log(sum(math.exp(v - m) for v in row))
                out[i, h, q] = -math.inf
                for j in kept:
                    out[i, h, q, j] = float(x[i, h, q, j]) - lse
    return out


def _kl64(ls, lt, keep):
    """Mean over kept queries' rows of sum over kept keys of p_t (log p_t - log p_s)."""
    b, r, length, _ = ls.shape
    total, rows = 0.0, 0
    for i in range(b):
        for h in range(r):
            for q in range(length):
                if not keep[i, q]:
                    continue
                rows += 1
                total += sum(math.exp(lt[i, h, q, j]) * (lt[i, h, q, j] - ls[i, h, q, j])
                             for j in range(length) if keep[i, j])
    return total / max(rows, 1)


def test_exponential_matches_torch_within_two_ulp():
    x = torch.cat([torch.linspace(-87.3, 0.0, 200_001), torch.tensor([-1e-30, -0.0])])
    got = rk.kernel().exp_nonpos_tensor(x).double()
    ref = torch.exp(x.double())
    assert ((got - ref).abs() / ref).max().item() < 2.4e-7  # two float32 ulps
    below = rk.kernel().exp_nonpos_tensor(torch.tensor([-87.5, -100.0, -3.4e38]))
    assert torch.equal(below, torch.zeros(3))


def test_masked_log_softmax_values_and_gradient():
    gen = torch.Generator().manual_seed(0)
    keep = _keep()
    x = _relations(gen, keep).requires_grad_()
    out = rk.masked_log_softmax(x, keep)
    ref = _log_softmax64(x.detach(), keep)
    kept = torch.isfinite(ref)
    torch.testing.assert_close(out.double()[kept], ref[kept], rtol=0, atol=2e-6)
    assert torch.all(out[~kept] == losses._NEG)  # probability exactly 0
    # gradient of sum(w * out) over kept outputs, against float64 autograd of the reference
    w = torch.randn(x.shape, generator=gen) * kept
    (g,) = torch.autograd.grad((out * w).sum(), x)
    x64 = x.detach().double().requires_grad_()
    masked = torch.where(keep[:, None, None, :], x64, torch.tensor(-1e300, dtype=torch.float64))
    (g64,) = torch.autograd.grad((torch.log_softmax(masked, -1) * w.double()).sum(), x64)
    g64 = torch.where(keep[:, None, None, :], g64, torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(g.double(), g64, rtol=0, atol=2e-6)


def test_relation_kl_values_and_gradients_of_both_sides():
    gen = torch.Generator().manual_seed(1)
    keep = _keep()
    ls = rk.masked_log_softmax(_relations(gen, keep), keep).requires_grad_()
    lt = rk.masked_log_softmax(_relations(gen, keep), keep).requires_grad_()
    value = rk.relation_kl(ls, lt, keep)
    ref = _kl64(ls.detach().double(), lt.detach().double(), keep)
    assert value.dtype == torch.float32 and abs(value.item() - ref) < 1e-6 * max(1, abs(ref))
    g_s, g_t = torch.autograd.grad(2.5 * value, (ls, lt))
    # by hand: n kept rows; d/d ls = -p_t / n, d/d lt = p_t (lt - ls + 1) / n, 0 elsewhere
    n = keep.sum().item() * ls.shape[1]
    p_t = lt.detach().double().exp()
    rows = keep[:, None, :, None] & keep[:, None, None, :]
    want_s = torch.where(rows, -2.5 * p_t / n, 0.0)
    want_t = torch.where(rows, 2.5 * p_t * (lt.detach() - ls.detach() + 1).double() / n, 0.0)
    torch.testing.assert_close(g_s.double(), want_s, rtol=0, atol=1e-7)
    torch.testing.assert_close(g_t.double(), want_t, rtol=0, atol=1e-7)
    # the teacher side alone needs no gradient: only the student's is computed
    (only_s,) = torch.autograd.grad(rk.relation_kl(ls, lt.detach(), keep), ls)
    torch.testing.assert_close(only_s, g_s / 2.5)


def test_the_same_value_whatever_the_threads():
    gen = torch.Generator().manual_seed(2)
    keep = torch.ones(8, 40, dtype=torch.bool)
    keep[3, 30:] = False
    ls = rk.masked_log_softmax(_relations(gen, keep, 12), keep)
    lt = rk.masked_log_softmax(_relations(gen, keep, 12), keep)
    threads = torch.get_num_threads()
    try:
        values = []
        for n in (1, 2):
            torch.set_num_threads(n)
            values.append((rk.relation_kl(ls, lt, keep), rk.masked_log_softmax(ls, keep)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(values[0][0], values[1][0]) and torch.equal(values[0][1], values[1][1])


def _memo_terms(impl):
    """relation_kl's ILD term plus a consistency-style term sharing the student's side."""
    gen = torch.Generator().manual_seed(3)
    keep = torch.arange(9)[None] < torch.tensor([[9], [4], [7], [2]])
    x_s = torch.randn(4, 9, 16, generator=gen, requires_grad=True)
    x_t = torch.randn(4, 9, 24, generator=gen)
    clean = torch.randn(4, 9, 16, generator=gen)
    side, divergence = rk.relation_functions(impl)
    memo = RelationMemo(side)
    total = (losses.relation_kl(x_s, x_t, keep, 4, log_probs=memo.log_probs,
                                divergence=divergence)
             + losses.relation_kl(x_s, clean, keep, 4, log_probs=memo.log_probs,
                                  divergence=divergence))
    (grad,) = torch.autograd.grad(total, x_s)
    return total, grad


def test_relation_kl_and_memo_agree_with_the_torch_path():
    (v0, g0), (v1, g1) = _memo_terms("torch"), _memo_terms("cpp")
    torch.testing.assert_close(v1, v0, rtol=2e-6, atol=0)
    torch.testing.assert_close(g1, g0, rtol=0, atol=2e-6 * g0.abs().max().item())
    with pytest.raises(ValueError, match="--relation-kl-impl 'fused': choose torch, cpp"):
        rk.relation_functions("fused")


def test_cr_ild_step_with_either_implementation():
    """The cr_ild preset's step (ILD + consistency on Q/K/V) under --relation-kl-impl cpp:
    the torch path's loss and gradients up to float32 rounding."""
    teacher = _bert(4, 16, 4, 0)
    task = _Task(teacher)
    task.current_epoch, task.num_updates = 3, 5
    sample = _sample()
    runs = []
    for impl in ("torch", "cpp"):
        student = _bert(2, 16, 4, 1).train()
        crit = _crit(task, student, ild_preset="cr_ild", num_relation_heads=4,
                     relation_kl_impl=impl)
        torch.manual_seed(0)  # the same mixup and dropout draws
        loss, _, log = crit(student, sample)
        loss.backward()
        runs.append((log, {n: p.grad for n, p in student.named_parameters()
                           if p.grad is not None}))
    (log0, g0), (log1, g1) = runs
    assert float(log0["loss_cons"]) > 0
    # a KL near 0 is a difference of O(1) log-probabilities: float32 rounding is absolute
    for key in ("loss", "loss_ild", "loss_cons"):
        torch.testing.assert_close(log1[key], log0[key], rtol=1e-5, atol=1e-7)
    scale = max(g.abs().max().item() for g in g0.values())
    assert g0.keys() == g1.keys()
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, rtol=0, atol=1e-5 * scale, msg=name)


def test_missing_compiler_names_the_option(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def fail(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    rk.kernel.cache_clear()
    monkeypatch.setattr(cpp, "load_inline", fail)
    try:
        with pytest.raises(rk.RelationKernelUnavailable, match="--relation-kl-impl torch"):
            _crit(_Task(_bert(4, 16, 4, 0)), _bert(2, 16, 4, 1), ild_preset="cr_ild",
                  num_relation_heads=4, relation_kl_impl="cpp")
    finally:
        rk.kernel.cache_clear()
