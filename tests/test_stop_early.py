"""FeatureRequest(stop_early=True): the encoder computes only what the requested features
need, with the same features bit for bit and the same CPU random stream (the skipped
dropouts' draws are replayed), so a later pass's dropout, and a whole cr_ild step, are
unchanged."""

import pytest
import torch

from fairseq_crild.models.requests import FeatureRequest, MixupSpec
from tests.helpers_bert import toy_bert
from tests.helpers_criterion import both_ways
from tests.test_distill_criterions import _sample, _Task
from tests.test_fidelity_criterion import _crit


def _run(model, sample, request):
    torch.manual_seed(3)
    out, extra = model(**sample["net_input"], request=request)
    after = torch.randn(5)  # what the next random draw gives: the stream's position
    return out, extra, after


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("qkv,scores", [({2}, set()), ({1}, set()), ({1}, {1}), ({0, 2}, {1}),
                                        (set(), {2})])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("impl", ["torch", "hash"])
def test_same_features_and_random_stream(dtype, qkv, scores, training, impl):
    model = toy_bert(3, 16, 4, 0, dropout=0.1, dropout_impl=impl).to(dtype).train(training)
    sample = _sample()
    mixup = MixupSpec(lam=0.7, partner=torch.tensor([3, 2, 1, 0]))
    full = FeatureRequest(qkv=frozenset(qkv), attention_scores=frozenset(scores), mixup=mixup)
    early = FeatureRequest(qkv=frozenset(qkv), attention_scores=frozenset(scores), mixup=mixup,
                           stop_early=True)
    x0, e0, r0 = _run(model, sample, full)
    x1, e1, r1 = _run(model, sample, early)
    assert torch.equal(r0, r1)  # the random stream is where the full forward leaves it
    runs_in_full = max(qkv | scores) == 2 and 2 in scores  # the last layer's scores
    assert x0 is not None and (x1 is None) != runs_in_full
    assert torch.equal(e0["padding_mask"], e1["padding_mask"])
    for layer in qkv:
        for k in "qkv":
            assert torch.equal(e0["qkv"][layer][k], e1["qkv"][layer][k])
    for layer in scores:
        assert torch.equal(e0["attention_scores"][layer], e1["attention_scores"][layer])


def test_no_stop_with_a_head_hidden_states_or_pooled_output():
    model = toy_bert(3, 16, 4, 0).eval()
    sample = _sample()
    for request in (FeatureRequest(qkv=frozenset({0}), hidden_states=True, stop_early=True),
                    FeatureRequest(qkv=frozenset({0}), pooled_output=True, stop_early=True)):
        x, _ = model(**sample["net_input"], request=request)
        assert x is not None
    logits, _ = model(**sample["net_input"], classification_head_name="glue",
                      request=FeatureRequest(qkv=frozenset({0}), stop_early=True))
    assert logits.shape == (4, 2)


@pytest.mark.parametrize("impl", ["torch", "hash"])
def test_cr_ild_step_unchanged_by_stopping_early(impl):
    """The cr_ild preset's step (its requests stop at the last layer's Q/K/V): the same
    loss, logged terms and gradients, bit for bit, as with every layer run, with dropout
    (either dropout implementation: the hash one's skipped dropouts consume one seed each)."""
    from fairseq_crild.criterions.cr_ild import CrIldCriterion

    teacher = toy_bert(4, 16, 4, 0, dropout=0.1)
    student = toy_bert(2, 16, 4, 1, dropout=0.1, dropout_impl=impl)
    task = _Task(teacher)
    task.current_epoch, task.num_updates = 3, 5
    sample = _sample()
    crit = _crit(task, student.train(), ild_preset="cr_ild", num_relation_heads=4)
    assert CrIldCriterion.stop_early  # the default
    assert crit._student_request(None).stop_early
    (log0, g0, r0), (log1, g1, r1) = both_ways(crit, student, sample, "stop_early")
    assert float(log0["loss_cons"]) > 0
    assert torch.equal(r0, r1)
    assert all(torch.equal(log0[k], log1[k]) for k in log0 if torch.is_tensor(log0[k]))
    assert g0.keys() == g1.keys()
    for name, g in g0.items():
        assert torch.equal(g1[name], g), name
