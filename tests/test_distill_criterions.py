"""kd and cr_ild on tiny random models: loss values, frozen teacher, gradients, EMA."""


import pytest
import torch

from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.criterions.kd import KdCriterion
from fairseq_crild.distill import losses
from tests.helpers_bert import TOY_VOCAB, toy_bert, toy_dictionary
from tests.helpers_task import OneTeacherTask

VOCAB = TOY_VOCAB


_dictionary = toy_dictionary
_bert = toy_bert  # (layers, dim, heads, seed)


_Task = OneTeacherTask  # the criterion–task contract, one in-memory teacher


def _sample():
    tokens = torch.tensor([[0, 5, 6, 7, 2, 8, 2], [0, 9, 2, 10, 2, 1, 1], [0, 11, 12, 2, 13, 2, 1],
                           [0, 14, 2, 15, 16, 17, 2]])
    types_ = (torch.arange(7)[None] >= torch.tensor([[5], [3], [4], [3]])).long()
    return {"net_input": {"src_tokens": tokens, "token_type_ids": types_},
            "target": torch.tensor([0, 1, 1, 0]), "ntokens": int(tokens.ne(1).sum()),
            "nsentences": 4}


def _cr_ild(task, student, **overrides):
    cfg = CrIldConfig(**{"max_epoch": 4, "max_update": 0, **overrides})
    crit = CrIldCriterion(cfg, task)
    crit.prepare_student(student)
    return crit


def _step(crit, student, sample):
    params = [p for p in list(student.parameters()) + list(crit.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss, n, log = crit(student, sample)
    opt.zero_grad()
    (loss / n).backward()
    return opt, loss, log


def test_kd_loss_is_the_hand_computed_soft_cross_entropy():
    teacher, student = _bert(2, 16, 2, 0), _bert(1, 16, 2, 1)
    crit = KdCriterion(_Task(teacher), temperature=2.0, alpha=0.0)
    sample = _sample()
    loss, n, log = crit(student.eval(), sample)
    with torch.no_grad():
        zs, _ = student(**sample["net_input"], classification_head_name="glue")
        zt, _ = teacher(**sample["net_input"], classification_head_name="glue")
    expected = 0.0
    for b in range(4):
        pt = torch.softmax(zt[b] / 2, -1)
        expected += -(pt * torch.log_softmax(zs[b] / 2, -1)).sum() * 4
    assert n == 4
    assert torch.allclose(loss, expected, atol=1e-6)  # summed over the batch, x T^2


def test_cr_ild_step_changes_only_the_student():
    teacher, student = _bert(4, 16, 2, 0), _bert(2, 8, 2, 1)  # narrower student
    task = _Task(teacher)
    task.current_epoch = 3
    crit = _cr_ild(task, student.train(), ild_preset="cr_ild", ild_objects="qkv,hidden",
                   num_relation_heads=2)
    assert crit.projection is not None and crit.layers.layer_map == [(1, 3)]
    # heads and pooler are unreachable by ILD losses: frozen before DDP/optimizer see them
    assert not student.classification_heads["glue"].out_proj.weight.requires_grad
    assert not student.pooler.weight.requires_grad
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    opt, loss, log = _step(crit, student, _sample())
    assert all(p.grad is None for p in teacher.parameters())
    assert crit.projection.weight.grad is not None
    opt.step()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())
    changed = [k for k, v in s_before.items() if not torch.equal(v, student.state_dict()[k])]
    assert "layers.1.attention.q_proj.weight" in changed
    assert "layers.1.fc2.weight" in changed  # reached through the hidden-state MSE
    assert {"loss_qkv", "loss_hidden", "loss_cons", "lam", "w_cons"} <= set(log)
    assert 0.5 <= float(log["lam"]) / 4 <= 1.0
    # consistency weight: 0.1 * (epoch - 1) / max_epoch = 0.1 * 2 / 4
    assert float(log["w_cons"]) / 4 == pytest.approx(0.05)


def test_l_ild_loss_matches_the_relation_loss_computed_directly():
    teacher, student = _bert(4, 16, 4, 0), _bert(2, 16, 4, 1)
    crit = _cr_ild(_Task(teacher), student.eval(), ild_preset="l_ild", num_relation_heads=4)
    sample = _sample()
    loss, n, _ = crit(student, sample)
    from fairseq_crild.models import FeatureRequest
    with torch.no_grad():
        _, se = student(**sample["net_input"], request=FeatureRequest(qkv=frozenset({1})))
        _, te = teacher(**sample["net_input"], request=FeatureRequest(qkv=frozenset({3})))
    mask = sample["net_input"]["src_tokens"].ne(1)
    expected = losses.qkv_relation_kl(se["qkv"][1], te["qkv"][3], mask, 4)
    assert torch.allclose(loss / n, expected, atol=1e-6)


def test_identical_student_and_teacher_give_zero_tinybert_loss():
    """Without fit_dense (the preset's default is the authors' --hidden-projection always)."""
    teacher = _bert(2, 16, 2, 0)
    student = _bert(2, 16, 2, 0)
    crit = _cr_ild(_Task(teacher), student.eval(), ild_preset="tinybert",
                   hidden_projection="when-widths-differ")
    assert crit.projection is None
    loss, _, log = crit(student, _sample())
    assert abs(float(loss.detach())) < 1e-6 and "loss_attention" in log and "loss_hidden" in log


def test_ema_target_is_saved_and_follows_the_student():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    task = _Task(teacher)
    task.current_epoch = 2
    crit = _cr_ild(task, student.train(), ild_preset="cr_ild", consistency_target="ema",
                   consistency_on_relations=True, num_relation_heads=2, ema_decay=0.5)
    assert any(k.startswith("ema_model.") for k in crit.state_dict())
    opt, _, _ = _step(crit, student, _sample())
    opt.step()
    before = crit.ema_model.layers[0].fc1.weight.clone()
    task.num_updates = 1
    _step(crit, student, _sample())
    expected = 0.5 * before + 0.5 * student.layers[0].fc1.weight
    assert torch.allclose(crit.ema_model.layers[0].fc1.weight, expected)
    assert int(crit.ema_updates) == 1
