"""PKD at the CR-ILD authors' scale: the PKD term is the mean over batch x mapped layers x
hidden size of the squared difference of L2-normalised [CLS] vectors, both
for ``losses.pkd_cls_loss`` and for the ``cr_ild`` criterion's total (preset ``pkd``)."""

import math

import pytest
import torch

from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.distill import losses as L
from fairseq_crild.models import FeatureRequest
from tests.helpers_bert import TOY_VOCAB, toy_bert
from tests.helpers_task import OneTeacherTask

VOCAB = TOY_VOCAB


def f32(x):
    return torch.tensor(x, dtype=torch.float32)


def test_feature_mean_and_layer_share_by_hand():
    cls_s = [[3.0, 4.0], [1.0, 0.0]]
    cls_t = [[0.0, 2.0], [0.0, -5.0]]
    # normalised: (0.6, 0.8) vs (0, 1) -> squares 0.36, 0.04; (1, 0) vs (0, -1) -> 1, 1;
    # mean over batch x hidden = 2.4 / 4 = 0.6
    got = L.pkd_cls_loss(f32(cls_s), f32(cls_t), feature_mean=True)
    assert got.item() == pytest.approx(0.6, rel=1e-6)
    got = L.pkd_cls_loss(f32(cls_s), f32(cls_t), feature_mean=True, num_layers=3)
    assert got.item() == pytest.approx(0.2, rel=1e-6)
    # the PKD paper's formula (default) is unchanged: (0.4 + 2) / 2
    assert L.pkd_cls_loss(f32(cls_s), f32(cls_t)).item() == pytest.approx(1.2, rel=1e-6)
    with pytest.raises(ValueError, match="num_layers"):
        L.pkd_cls_loss(f32(cls_s), f32(cls_t), num_layers=0)


def test_per_layer_calls_sum_to_the_stacked_mean():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(5, 3, 8, generator=gen)  # (batch, layers, hidden)
    t = torch.randn(5, 3, 8, generator=gen)
    per_layer = sum(L.pkd_cls_loss(s[:, k], t[:, k], feature_mean=True, num_layers=3)
                    for k in range(3))
    stacked = L.pkd_cls_loss(s, t, feature_mean=True)
    # plain float64 reference: mean over 5 x 3 x 8 entries
    total = 0.0
    for b in range(5):
        for k in range(3):
            ns = math.sqrt(sum(float(v) ** 2 for v in s[b, k]))
            nt = math.sqrt(sum(float(v) ** 2 for v in t[b, k]))
            total += sum((float(a) / ns - float(c) / nt) ** 2 for a, c in zip(s[b, k], t[b, k]))
    want = total / (5 * 3 * 8)
    assert stacked.item() == pytest.approx(want, rel=1e-5)
    assert per_layer.item() == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- criterion


def _bert(layers, seed, dim=16, heads=2):
    return toy_bert(layers, dim, heads, seed)


_Task = OneTeacherTask  # the criterion–task contract, one in-memory teacher


@pytest.mark.parametrize("dims", [(16, 16), (8, 16)])
def test_criterion_pkd_term_is_the_mean_over_batch_layers_hidden(dims):
    s_dim, t_dim = dims
    teacher, student = _bert(4, 0, dim=t_dim), _bert(2, 1, dim=s_dim)
    cfg = CrIldConfig(max_epoch=1, max_update=0, ild_preset="pkd")
    crit = CrIldCriterion(cfg, _Task(teacher))
    crit.prepare_student(student.eval())
    tokens = torch.tensor([[0, 5, 6, 7, 2, 8, 2], [0, 9, 2, 10, 2, 1, 1],
                           [0, 11, 12, 2, 13, 2, 1]])
    sample = {"net_input": {"src_tokens": tokens}, "ntokens": int(tokens.ne(1).sum()),
              "nsentences": 3}
    loss, n, log = crit(student, sample)
    assert n == 3

    request = FeatureRequest(hidden_states=True)
    with torch.no_grad():
        _, se = student(tokens, request=request)
        _, te = teacher(tokens, request=request)
    # uniform map 2 -> 4: student layers 0, 1 <- teacher layers 1, 3 (hidden_states[i + 1])
    pairs = [(1, 2), (2, 4)]
    proj = crit.projection
    assert proj is not None or s_dim == t_dim
    total = 0.0
    for b in range(3):
        for i, j in pairs:
            h = se["hidden_states"][i][b, 0].double()
            if proj is not None:  # the learned fit_dense, W h + b, in float64
                h = proj.weight.detach().double() @ h + proj.bias.detach().double()
            g = te["hidden_states"][j][b, 0].double()
            hs, ht = h / h.norm(), g / g.norm()
            total += sum((float(x) - float(y)) ** 2 for x, y in zip(hs, ht))
    want = total / (3 * len(pairs) * t_dim)
    assert float(log["loss_cls"]) / n == pytest.approx(want, rel=1e-5)
    assert float(loss.detach()) / n == pytest.approx(want, rel=1e-5)
