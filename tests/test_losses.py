"""Unit tests of fairseq_crild/distill/losses.py against plain-python / numpy reference loops.

The module is loaded from its file, not through the package, so these tests need neither
fairseq nor the rest of the plugin (the package __init__ imports fairseq).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers_bert import load_pure_module

L = load_pure_module("distill.losses")
# mixup's input mixing lives with the encoders that apply it (also free of fairseq)
R = load_pure_module("models.requests")


def np_softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def np_log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def ref_row_kl(s_row, t_row, kl=True):
    """KL(softmax(t) || softmax(s)) or cross-entropy of one row, plain python."""
    p_t = np_softmax(t_row)
    lp_s = np_log_softmax(s_row)
    lp_t = np_log_softmax(t_row)
    if kl:
        return sum(p * (a - b) for p, a, b in zip(p_t, lp_t, lp_s))
    return -sum(p * b for p, b in zip(p_t, lp_s))


def ref_attention(s, t, mask, kl=True):
    """s, t: nested lists (B, H, L, L); mask: (B, L) of bools (None = all real)."""
    total, rows = 0.0, 0
    for b in range(len(s)):
        keep = [True] * len(s[b][0]) if mask is None else mask[b]
        keys = [k for k, m in enumerate(keep) if m]
        for h in range(len(s[b])):
            for q, m in enumerate(keep):
                if not m:
                    continue
                total += ref_row_kl(
                    [s[b][h][q][k] for k in keys], [t[b][h][q][k] for k in keys], kl
                )
                rows += 1
    return total / rows


def ref_relations(x, r):
    """x: (B, L, D) numpy -> (B, R, L, L) numpy, by loops."""
    b_, l_, d = x.shape
    dr = d // r
    out = np.zeros((b_, r, l_, l_))
    for b in range(b_):
        for h in range(r):
            for i in range(l_):
                for j in range(l_):
                    xi = x[b, i, h * dr : (h + 1) * dr]
                    xj = x[b, j, h * dr : (h + 1) * dr]
                    out[b, h, i, j] = float(np.dot(xi, xj)) / math.sqrt(dr)
    return out


def f32(x):
    return torch.tensor(x, dtype=torch.float32)


# --------------------------------------------------------------------------- KD


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_hand_computed(temperature):
    zs = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    zt = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]
    expected = 0.0
    for s_row, t_row in zip(zs, zt):
        p_t = np_softmax([v / temperature for v in t_row])
        lp_s = np_log_softmax([v / temperature for v in s_row])
        expected += -sum(p * q for p, q in zip(p_t, lp_s))
    expected = temperature**2 * expected / len(zs)
    got = L.kd_loss(f32(zs), f32(zt), temperature=temperature)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_explicit_value_t1():
    # One example, teacher uniform over 2 classes, student logits (0, 0): CE = log 2.
    got = L.kd_loss(f32([[0.0, 0.0]]), f32([[5.0, 5.0]]), temperature=1.0)
    assert got.item() == pytest.approx(math.log(2), rel=1e-6)
    # T=2 multiplies by T^2 = 4 (the distributions are still uniform).
    got = L.kd_loss(f32([[0.0, 0.0]]), f32([[5.0, 5.0]]), temperature=2.0)
    assert got.item() == pytest.approx(4 * math.log(2), rel=1e-6)


def test_kd_loss_errors():
    with pytest.raises(ValueError):
        L.kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        L.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)


def test_kd_regression_loss():
    s, t = [1.0, 2.0, 4.0], [0.0, 2.0, 1.0]
    for temperature in (1.0, 2.0):
        expected = sum((a / temperature - b / temperature) ** 2 for a, b in zip(s, t)) / 3
        got = L.kd_regression_loss(f32(s), f32(t), temperature)
        assert got.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        L.kd_regression_loss(torch.zeros(3, 1), torch.zeros(3))


# --------------------------------------------------------------------------- hidden MSE


def test_hidden_mse_padding_and_projection():
    g = torch.Generator().manual_seed(0)
    b_, l_, d_s, d_t = 2, 4, 3, 5
    h_s = torch.randn(b_, l_, d_s, generator=g)
    h_t = torch.randn(b_, l_, d_t, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    proj = torch.nn.Linear(d_s, d_t)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(d_t, d_s, generator=g))
        proj.bias.copy_(torch.randn(d_t, generator=g))
    ps = proj(h_s)

    # Reference: plain loop over real tokens.
    a, b = ps.detach().numpy().astype(np.float64), h_t.numpy().astype(np.float64)
    total, n = 0.0, 0
    for i in range(b_):
        for j in range(l_):
            if mask[i, j]:
                n += 1
                total += sum((a[i, j, k] - b[i, j, k]) ** 2 for k in range(d_t))
    expected = total / (n * d_t)
    got = L.hidden_mse(ps, h_t, mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)

    # Huge (and inf) values at padded positions change neither loss nor gradient.
    h_s2 = h_s.clone()
    h_t2 = h_t.clone()
    h_s2[0, 3] = 1e30
    h_t2[1, 2:] = float("inf")
    h_s2.requires_grad_(True)
    got2 = L.hidden_mse(proj(h_s2), h_t2, mask)
    assert got2.item() == pytest.approx(got.item(), rel=1e-6)
    got2.backward()
    assert torch.isfinite(h_s2.grad).all()
    assert torch.all(h_s2.grad[0, 3] == 0) and torch.all(h_s2.grad[1, 2:] == 0)
    assert torch.isfinite(proj.weight.grad).all()


def test_hidden_mse_no_mask_and_errors():
    h_s = f32([[[1.0, 2.0]]])
    h_t = f32([[[0.0, 0.0]]])
    assert L.hidden_mse(h_s, h_t).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="project"):
        L.hidden_mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="mask"):
        L.hidden_mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 3, dtype=bool))


def test_hidden_mse_include_averages_over_every_position():
    """The authors' batches are padded to 128 and their MSE is the plain mean over all
    B x L x D entries: a hand-sized case (B=2, L=3, D=2), padding counted."""
    h_s = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [3.0, 3.0]],
                        [[2.0, 0.0], [5.0, -1.0], [-2.0, 4.0]]], dtype=torch.float64)
    h_t = torch.zeros_like(h_s)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # squares: b0 = 1+4, 0+1, 9+9 ; b1 = 4+0, 25+1, 4+16  -> 74 over 12 entries
    assert L.hidden_mse(h_s, h_t, mask, "include").item() == pytest.approx(74 / 12, rel=1e-6)
    # excluded: only (0,0), (0,1), (1,0) count -> (5 + 1 + 4) / (3 * 2)
    assert L.hidden_mse(h_s, h_t, mask).item() == pytest.approx(10 / 6, rel=1e-6)
    with pytest.raises(ValueError, match="pad_mask_mode"):
        L.hidden_mse(h_s, h_t, mask, "all")


# --------------------------------------------------------------------------- attention KL


def _attention_case():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 2, 4, 4, generator=g) * 2
    t = torch.randn(2, 2, 4, 4, generator=g) * 2
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    return s, t, mask


@pytest.mark.parametrize("kl", [True, False])
def test_attention_kl_matches_reference(kl):
    s, t, mask = _attention_case()
    expected = ref_attention(s.tolist(), t.tolist(), mask.tolist(), kl)
    assert L.attention_kl(s, t, mask, kl=kl).item() == pytest.approx(expected, rel=1e-5)
    expected_nomask = ref_attention(s.tolist(), t.tolist(), None, kl)
    assert L.attention_kl(s, t, None, kl=kl).item() == pytest.approx(expected_nomask, rel=1e-5)


def test_attention_kl_identical_is_zero_and_ce_is_entropy():
    _, t, mask = _attention_case()
    assert L.attention_kl(t, t, mask, kl=True).item() == 0.0
    ent = ref_attention(t.tolist(), t.tolist(), mask.tolist(), kl=False)
    assert L.attention_kl(t, t, mask, kl=False).item() == pytest.approx(ent, rel=1e-5)


def test_attention_kl_padding_invariance():
    s, t, mask = _attention_case()
    base = L.attention_kl(s, t, mask)
    s2, t2 = s.clone(), t.clone()
    # Padded keys of example 1: huge values, -inf (as the model emits) in both.
    s2[1, :, :, 2:] = 1e4
    t2[1, :, :, 2:] = float("-inf")
    # Padded query rows of example 1: anything.
    s2[1, :, 2:, :] = -7e3
    t2[1, :, 2:, :] = 3e3
    s2.requires_grad_(True)
    got = L.attention_kl(s2, t2, mask)
    assert got.item() == pytest.approx(base.item(), rel=1e-6)
    got.backward()
    assert torch.isfinite(s2.grad).all()
    assert torch.all(s2.grad[1, :, :, 2:] == 0) and torch.all(s2.grad[1, :, 2:, :] == 0)


@pytest.mark.parametrize("kl", [True, False])
def test_attention_kl_include_averages_over_every_query_row(kl):
    """pad_mask_mode="include": padded keys still leave both softmaxes (the model's scores
    carry the mask), but every (b, head, query) row counts, padded queries included:
    the mean over all B x H x L rows (float64 reference)."""
    s, t, mask = _attention_case()
    s, t = s.double(), t.double()
    total, rows = 0.0, 0
    for b in range(2):
        keys = [k for k in range(4) if mask[b, k]]
        for h in range(2):
            for q in range(4):  # every query row, real or padded
                total += ref_row_kl([float(s[b, h, q, k]) for k in keys],
                                    [float(t[b, h, q, k]) for k in keys], kl)
                rows += 1
    assert rows == 2 * 2 * 4
    got = L.attention_kl(s, t, mask, kl=kl, pad_mask_mode="include")
    assert got.item() == pytest.approx(total / rows, rel=1e-6)
    assert got.item() != pytest.approx(L.attention_kl(s, t, mask, kl=kl).item(), rel=1e-3)


def test_attention_kl_head_mismatch():
    with pytest.raises(ValueError, match="heads"):
        L.attention_kl(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, 3))


# --------------------------------------------------------------------------- relation KL


@pytest.mark.parametrize("r", [2, 4])
def test_relation_kl_different_widths(r):
    g = torch.Generator().manual_seed(2)
    x_s = torch.randn(2, 5, 8, generator=g)
    x_t = torch.randn(2, 5, 12, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    rel_s = ref_relations(x_s.numpy().astype(np.float64), r)
    rel_t = ref_relations(x_t.numpy().astype(np.float64), r)

    expected_ex = ref_attention(rel_s.tolist(), rel_t.tolist(), mask.tolist(), kl=True)
    got_ex = L.relation_kl(x_s, x_t, mask, r, pad_mask_mode="exclude")
    assert got_ex.item() == pytest.approx(expected_ex, rel=1e-5)

    expected_in = ref_attention(rel_s.tolist(), rel_t.tolist(), None, kl=True)
    got_in = L.relation_kl(x_s, x_t, mask, r, pad_mask_mode="include")
    assert got_in.item() == pytest.approx(expected_in, rel=1e-5)
    assert abs(expected_in - expected_ex) > 1e-3  # the modes really differ here

    # Exclude mode: padded positions may hold anything.
    x_s2, x_t2 = x_s.clone(), x_t.clone()
    x_s2[1, 3:] = 50.0
    x_t2[1, 3:] = -80.0
    got_ex2 = L.relation_kl(x_s2, x_t2, mask, r)
    assert got_ex2.item() == pytest.approx(got_ex.item(), rel=1e-6)


def test_relation_kl_identical_zero_and_errors():
    x = torch.randn(2, 3, 6)
    assert L.relation_kl(x, x, None, 3).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="divisible"):
        L.relation_kl(torch.zeros(1, 3, 8), torch.zeros(1, 3, 12), None, 3)
    with pytest.raises(ValueError, match="pad_mask_mode"):
        L.relation_kl(x, x, None, 3, pad_mask_mode="none")


def test_qkv_relation_kl_sums_keys():
    g = torch.Generator().manual_seed(3)
    qkv_s = {k: torch.randn(2, 4, 8, generator=g) for k in "qkv"}
    qkv_t = {k: torch.randn(2, 4, 12, generator=g) for k in "qkv"}
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    expected = sum(L.relation_kl(qkv_s[k], qkv_t[k], mask, 4).item() for k in "qkv")
    got = L.qkv_relation_kl(qkv_s, qkv_t, mask, 4)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    sub = L.qkv_relation_kl({"q": qkv_s["q"]}, {"q": qkv_t["q"]}, mask, 4)
    assert sub.item() == pytest.approx(L.relation_kl(qkv_s["q"], qkv_t["q"], mask, 4).item())
    with pytest.raises(ValueError):
        L.qkv_relation_kl({"q": qkv_s["q"]}, qkv_t, mask, 4)
    with pytest.raises(ValueError):
        L.qkv_relation_kl({"x": qkv_s["q"]}, {"x": qkv_t["q"]}, mask, 4)


# --------------------------------------------------------------------------- PKD


def test_pkd_cls_loss():
    cls_s = [[3.0, 4.0], [1.0, 0.0]]
    cls_t = [[0.0, 2.0], [0.0, -5.0]]
    # Normalised: (0.6, 0.8) vs (0, 1) -> 0.36 + 0.04 = 0.4; (1, 0) vs (0, -1) -> 2.
    expected = (0.4 + 2.0) / 2
    assert L.pkd_cls_loss(f32(cls_s), f32(cls_t)).item() == pytest.approx(expected, rel=1e-6)
    got = L.pkd_cls_loss(f32(cls_s), f32(cls_t), feature_mean=True)
    assert got.item() == pytest.approx(expected / 2, rel=1e-6)


# --------------------------------------------------------------------------- layer maps


def test_layer_maps():
    assert L.uniform_layer_map(3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert L.uniform_layer_map(6, 12) == [(i, 2 * i + 1) for i in range(6)]
    assert L.uniform_layer_map(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert L.last_layer_map(3, 6) == [(2, 5)]
    assert L.parse_layer_map("last", 4, 12) == [(3, 11)]
    assert L.parse_layer_map(" Uniform ", 3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert L.parse_layer_map("0:1, 1:3,2:5", 3, 6) == [(0, 1), (1, 3), (2, 5)]
    # TinyBERT pairs the embedding outputs too: hidden-state indices, 0 = embeddings
    assert L.hidden_state_pairs(L.uniform_layer_map(3, 6), True) == [
        (0, 0), (1, 2), (2, 4), (3, 6)]
    assert L.hidden_state_pairs(L.last_layer_map(3, 6), False) == [(3, 6)]
    with pytest.raises(ValueError, match="multiple"):
        L.uniform_layer_map(4, 6)
    for bad, what in [
        ("3:1", "student layer 3"),
        ("0:6", "teacher layer 6"),
        ("0-1", "bad entry"),
        ("0:a", "bad entry"),
        ("", "expected"),
        ("0:1,0:1", "twice"),
        ("-1:2", "student layer -1"),
    ]:
        with pytest.raises(ValueError, match=what) as info:
            L.parse_layer_map(bad, 3, 6)
        assert repr(bad) in str(info.value) or bad == ""


# --------------------------------------------------------------------------- mixup


def test_sample_mixup_lambda():
    for gen in (torch.Generator().manual_seed(0), np.random.default_rng(0), None):
        lams = [L.sample_mixup_lambda(1.0, gen) for _ in range(200)]
        assert all(0.5 <= x <= 1.0 for x in lams)
        assert 0.7 < float(np.mean(lams)) < 0.8  # E[max(U, 1-U)] = 0.75
    a = [L.sample_mixup_lambda(0.4, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert a[0] == a[1]  # reproducible
    b = [L.sample_mixup_lambda(2.0, np.random.default_rng(5)) for _ in range(2)]
    assert b[0] == b[1]
    assert L.sample_mixup_lambda(0.0) == 1.0


def test_sample_mixup_lambda_torch_generator_distribution():
    # Inverse-CDF sampling for alpha != 1: compare the mean of max(lam, 1-lam) with numpy's.
    g = torch.Generator().manual_seed(0)
    torch_lams = [L.sample_mixup_lambda(0.4, g) for _ in range(4000)]
    rng = np.random.default_rng(0)
    draws = rng.beta(0.4, 0.4, 200000)
    ref = np.maximum(draws, 1 - draws)
    assert abs(np.mean(torch_lams) - np.mean(ref)) < 0.01


def test_mixup_partner():
    assert L.mixup_partner(4).tolist() == [3, 2, 1, 0]
    assert L.mixup_partner(5, "reverse").tolist() == [4, 3, 2, 1, 0]
    perm = L.mixup_partner(6, "random", torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(6)) and perm.dtype == torch.long
    perm2 = L.mixup_partner(6, "random", torch.Generator().manual_seed(0))
    assert perm.tolist() == perm2.tolist()
    perm3 = L.mixup_partner(6, "random", np.random.default_rng(0))
    assert sorted(perm3.tolist()) == list(range(6))
    with pytest.raises(ValueError):
        L.mixup_partner(4, "shuffle")


def test_mix_embeddings_and_mask():
    emb = torch.randn(3, 4, 5)
    partner = L.mixup_partner(3)
    assert torch.equal(R.mix_embeddings(emb, partner, 1.0), emb)
    lam = 0.7
    mixed = R.mix_embeddings(emb, partner, lam)
    for i in range(3):
        ref = lam * emb[i] + (1 - lam) * emb[2 - i]
        assert torch.allclose(mixed[i], ref, atol=1e-6)
    assert torch.allclose(mixed[1], emb[1], atol=1e-6)  # odd B: middle is its own partner
    bf = emb.to(torch.bfloat16)
    assert R.mix_embeddings(bf, partner, lam).dtype == torch.bfloat16

    mask = torch.tensor(
        [[True, True, False, False], [True, False, False, False], [True, True, True, False]]
    )
    union = R.mix_padding_mask(mask, partner)
    assert union.tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [True, True, True, False],
    ]
    # fairseq convention (True = padding) through the documented inversion
    pad = ~mask
    assert torch.equal(~R.mix_padding_mask(~pad, partner), ~union)


# --------------------------------------------------------------------------- consistency


def test_consistency_loss():
    g = torch.Generator().manual_seed(4)
    mixed = torch.randn(3, 4, 6, generator=g)
    clean = torch.randn(3, 4, 6, generator=g)
    mask = torch.tensor([[True] * 4, [True, True, True, False], [True, True, False, False]])
    partner = L.mixup_partner(3)

    one = L.consistency_loss(L.hidden_mse, mixed, clean, partner, 1.0, mask)
    assert one.item() == pytest.approx(L.hidden_mse(mixed, clean, mask).item(), rel=1e-7)

    lam = 0.8
    got = L.consistency_loss(L.hidden_mse, mixed, clean, partner, lam, mask)
    # Reference by loops: lam * mse(mixed, clean) + (1 - lam) * mse(mixed, clean[2 - i]).
    m, c = mixed.numpy().astype(np.float64), clean.numpy().astype(np.float64)
    n_real = int(mask.sum())
    first = sum(((m[i, j] - c[i, j]) ** 2).sum() for i in range(3) for j in range(4) if mask[i, j])
    second = sum(
        ((m[i, j] - c[2 - i, j]) ** 2).sum() for i in range(3) for j in range(4) if mask[i, j]
    )
    expected = (lam * first + (1 - lam) * second) / (n_real * 6)
    assert got.item() == pytest.approx(expected, rel=1e-6)

    # Dicts of features (e.g. per layer) sum; options through functools.partial.
    scores_m = {0: torch.randn(3, 2, 4, 4, generator=g), 1: torch.randn(3, 2, 4, 4, generator=g)}
    scores_c = {0: torch.randn(3, 2, 4, 4, generator=g), 1: torch.randn(3, 2, 4, 4, generator=g)}
    dist = partial(L.attention_kl, kl=True)
    got_d = L.consistency_loss(dist, scores_m, scores_c, partner, lam, mask)
    exp_d = sum(
        lam * L.attention_kl(scores_m[k], scores_c[k], mask)
        + (1 - lam) * L.attention_kl(scores_m[k], scores_c[k][partner], mask)
        for k in (0, 1)
    )
    assert got_d.item() == pytest.approx(exp_d.item(), rel=1e-6)
    with pytest.raises(ValueError):
        L.consistency_loss(dist, scores_m, {0: scores_c[0]}, partner, lam, mask)


def test_consistency_attention_with_model_style_inf():
    # Clean scores carry -inf on each example's own padded keys; the mixed mask is the union.
    g = torch.Generator().manual_seed(6)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    partner = L.mixup_partner(2)
    union = R.mix_padding_mask(mask, partner)
    clean = torch.randn(2, 2, 4, 4, generator=g)
    clean = clean.masked_fill(~mask[:, None, None, :], float("-inf"))
    mixed = torch.randn(2, 2, 4, 4, generator=g, requires_grad=True)
    loss = L.consistency_loss(L.attention_kl, mixed, clean, partner, 0.6, union)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(mixed.grad).all()


def test_consistency_rampup():
    assert L.consistency_rampup(0, 20, 0.1) == 0.0
    assert L.consistency_rampup(5, 20, 0.1) == pytest.approx(0.025)
    assert L.consistency_rampup(19, 20, 0.1) == pytest.approx(0.095)
    assert L.consistency_rampup(20, 20, 0.1) == pytest.approx(0.1)
    assert L.consistency_rampup(25, 20, 0.1) == pytest.approx(0.1)
    assert L.consistency_rampup(-1, 20, 0.1) == 0.0
    with pytest.raises(ValueError):
        L.consistency_rampup(1, 0, 0.1)


# --------------------------------------------------------------------------- EMA


def test_ema_update():
    ema = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]]), torch.tensor([3])]
    params = [
        torch.nn.Parameter(torch.tensor([3.0, -2.0])),
        torch.nn.Parameter(torch.tensor([[10.0]])),
        torch.tensor([7]),
    ]
    L.ema_update(ema, params, decay=0.9)
    assert ema[0].tolist() == pytest.approx([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2])
    assert ema[1].item() == pytest.approx(1.0)
    assert ema[2].item() == 7
    assert not ema[0].requires_grad
    L.ema_update(ema, params, decay=0.9)
    assert ema[0][0].item() == pytest.approx(0.9 * 1.2 + 0.1 * 3)
    with pytest.raises(ValueError):
        L.ema_update(ema[:2], params)
    with pytest.raises(ValueError):
        L.ema_update(ema, params, decay=1.5)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32(dtype):
    g = torch.Generator().manual_seed(7)
    mask = torch.tensor([[True, True, False]])
    logits = torch.randn(2, 3, generator=g)
    h = torch.randn(1, 3, 4, generator=g)
    sc = torch.randn(1, 2, 3, 3, generator=g)
    outs = {
        "kd": L.kd_loss(logits.to(dtype), logits.flip(0).to(dtype)),
        "kdr": L.kd_regression_loss(logits.to(dtype), logits.flip(0).to(dtype)),
        "mse": L.hidden_mse(h.to(dtype), h.flip(1).to(dtype), mask),
        "att": L.attention_kl(sc.to(dtype), sc.flip(2).to(dtype), mask),
        "rel": L.relation_kl(h.to(dtype), h.flip(2).to(dtype), mask, 2),
        "pkd": L.pkd_cls_loss(h[:, 0].to(dtype), h[:, 1].to(dtype)),
    }
    refs = {
        "kd": L.kd_loss(logits.to(dtype).float(), logits.flip(0).to(dtype).float()),
        "kdr": L.kd_regression_loss(logits.to(dtype).float(), logits.flip(0).to(dtype).float()),
        "mse": L.hidden_mse(h.to(dtype).float(), h.flip(1).to(dtype).float(), mask),
        "att": L.attention_kl(sc.to(dtype).float(), sc.flip(2).to(dtype).float(), mask),
        "rel": L.relation_kl(h.to(dtype).float(), h.flip(2).to(dtype).float(), mask, 2),
        "pkd": L.pkd_cls_loss(h[:, 0].to(dtype).float(), h[:, 1].to(dtype).float()),
    }
    for name, out in outs.items():
        assert out.dtype == torch.float32, name
        assert out.dim() == 0, name
        assert out.item() == pytest.approx(refs[name].item(), rel=1e-6, abs=1e-7), name


def test_module_is_pure():
    src = Path(L.__file__).read_text()
    imports = [ln.strip() for ln in src.splitlines() if ln.strip().startswith(("import ", "from "))]
    assert not any("fairseq" in ln for ln in imports), imports
