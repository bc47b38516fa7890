"""The units cr_ild composes (fairseq_crild/criterions/ild_*.py, consistency.py), each on its
own against plain-Python expectations: presets, the layer map, the requested features, the
consistency ramp and mixup draws, fit_dense / EMA, freezing and fp32 children."""

import types

import pytest
import torch
from torch import nn

from fairseq_crild.criterions import consistency, ild_emd, ild_targets
from fairseq_crild.criterions.ild_distance import IldDistance
from fairseq_crild.criterions.ild_features import (
    feature_request,
    flatten_features,
    object_of,
    select_features,
)
from fairseq_crild.criterions.ild_freezing import freeze_unreached
from fairseq_crild.criterions.ild_layers import (
    check_attention_heads,
    relation_heads,
    resolve_layer_plan,
)
from fairseq_crild.criterions.ild_precision import KeepsFp32Children
from fairseq_crild.criterions.ild_presets import PRESETS, resolve_options
from fairseq_crild.models.requests import MixupSpec


def _cfg(**overrides):
    """The CrIldConfig fields a preset fills in, at their defaults."""
    base = dict(ild_preset="cr_ild", ild_objects="", ild_layer_map="", mixup="preset",
                consistency_weight=-1.0, consistency_objects="", consistency_on_relations=False,
                ild_padding="preset", relation_padding="ild", hidden_projection="preset")
    return types.SimpleNamespace(**{**base, **overrides})


# --------------------------------------------------------------------------- presets


def test_presets_fill_in_the_unset_options():
    paper = resolve_options(_cfg())
    assert (paper.objects, paper.layer_map_spec, paper.use_mixup) == (["qkv"], "last", True)
    assert paper.consistency_weight == 0.1 and paper.consistency_objects == ["qkv"]
    assert paper.consistency_acts and not paper.counts_padding
    release = resolve_options(_cfg(ild_preset="cr_ild_release"))
    # the release's consistency flags act on attention/hidden only: inert on Q/K/V
    assert release.consistency_objects == [] and not release.consistency_acts
    assert (release.pad_mode, release.relation_pad_mode) == ("include", "include")
    assert release.counts_padding
    tiny = resolve_options(_cfg(ild_preset="tinybert"))
    assert tiny.objects == ["attention", "hidden"] and tiny.projection_mode == "always"
    assert resolve_options(_cfg(ild_preset="l_ild")).projection_mode == "when-widths-differ"
    # an option given overrides the preset
    custom = resolve_options(_cfg(ild_preset="tinybert", ild_objects="hidden",
                                  hidden_projection="when-widths-differ", mixup="on",
                                  consistency_weight=0.5, relation_padding="include"))
    assert custom.objects == ["hidden"] and custom.projection_mode == "when-widths-differ"
    assert custom.consistency_objects == ["hidden"] and custom.consistency_acts
    assert (custom.pad_mode, custom.relation_pad_mode) == ("exclude", "include")
    assert set(PRESETS) >= {"cr_ild", "cr_ild_release", "l_ild", "tinybert", "pkd", "emd"}


def test_presets_refuse_what_cannot_work():
    with pytest.raises(ValueError, match="unknown \\['foo'\\]"):
        resolve_options(_cfg(ild_objects="qkv,foo"))
    with pytest.raises(ValueError, match="needs mixup"):
        resolve_options(_cfg(ild_preset="l_ild", consistency_weight=0.1))
    with pytest.raises(ValueError, match="not among the ILD objects"):
        resolve_options(_cfg(consistency_objects="hidden"))
    relations = resolve_options(_cfg(ild_preset="cr_ild_release", consistency_on_relations=True))
    assert relations.consistency_objects == ["qkv"]


# --------------------------------------------------------------------------- layer map


def test_uniform_map_of_a_3_layer_student_on_a_6_layer_teacher():
    plan = resolve_layer_plan("uniform", ["attention", "hidden"], 3, 6,
                              uniform_embedding_pair=True)
    # student layer i <- teacher layer 2 (i + 1) - 1 (0-based), every 6 / 3 = 2 layers
    assert plan.layer_map == [(0, 1), (1, 3), (2, 5)]
    assert (plan.student_layers, plan.teacher_layers) == ([0, 1, 2], [1, 3, 5])
    # hidden-state indices (0 = embedding output), the embedding pair first
    assert plan.embedding_pair and plan.hidden_pairs == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert not plan.every_pair
    off = resolve_layer_plan("uniform", ["hidden"], 3, 6, uniform_embedding_pair=False)
    assert not off.embedding_pair and off.hidden_pairs == [(1, 2), (2, 4), (3, 6)]
    relations = resolve_layer_plan("uniform", ["qkv"], 3, 6, uniform_embedding_pair=True)
    assert not relations.embedding_pair and relations.hidden_pairs == []


def test_last_explicit_and_emd_maps():
    assert resolve_layer_plan("last", ["qkv"], 3, 6, True).layer_map == [(2, 5)]
    explicit = resolve_layer_plan(" 0:0,2:4 ", ["hidden"], 3, 6, True)
    assert explicit.layer_map == [(0, 0), (2, 4)] and explicit.hidden_pairs == [(1, 1), (3, 5)]
    emd = resolve_layer_plan("EMD", ["hidden"], 2, 3, True)
    assert emd.every_pair and emd.layer_map == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert (emd.student_layers, emd.teacher_layers) == ([0, 1], [0, 1, 2])
    assert emd.hidden_pairs == [] and not emd.embedding_pair  # the flow pairs them
    with pytest.raises(ValueError, match="teacher layer 6 out of range 0..5"):
        resolve_layer_plan("0:6", ["hidden"], 3, 6, True)


def test_head_counts():
    check_attention_heads(["qkv"], 2, 4)  # relations compare any head counts
    with pytest.raises(ValueError, match="equal head counts"):
        check_attention_heads(["attention"], 2, 4)
    assert relation_heads(["qkv"], 0, 12, 384, 768) == 12  # the teacher's heads
    assert relation_heads(["qkv"], 8, 12, 384, 768) == 8
    assert relation_heads(["hidden"], 5, 12, 384, 768) == 5  # unused without qkv
    with pytest.raises(ValueError, match="does not divide the student width 384"):
        relation_heads(["qkv"], 0, 5, 384, 768)


# --------------------------------------------------------------------------- features


def test_request_and_features_follow_the_objects():
    req = feature_request(["qkv"], [1, 3], None)
    assert (req.hidden_states, req.attention_scores, req.qkv) == (False, frozenset(),
                                                                    frozenset({1, 3}))
    req = feature_request(["cls", "attention"], [2], None)
    assert req.hidden_states and req.attention_scores == frozenset({2}) and not req.qkv
    h = [torch.full((2, 3, 4), float(i)) for i in range(4)]  # embedding output + 3 layers
    extra = {"hidden_states": h, "attention_scores": {2: torch.ones(2, 1, 3, 3)},
             "qkv": {2: {"q": torch.zeros(2, 3, 4), "k": torch.zeros(2, 3, 4),
                         "v": torch.zeros(2, 3, 4)}}}
    feats = select_features(extra, ["hidden", "cls", "attention", "qkv"], [2], True)
    assert list(feats) == ["hidden.emb", "hidden.0", "cls.0", "attention.0", "qkv.0"]
    assert feats["hidden.emb"] is h[0] and feats["hidden.0"] is h[3]  # layer 2's output
    assert torch.equal(feats["cls.0"], h[3][:, 0])
    assert len(flatten_features(feats)) == 4 + 3  # the Q/K/V entry counts three
    assert [object_of(k) for k in feats] == ["hidden", "hidden", "cls", "attention", "qkv"]


def test_distance_projects_only_hidden_and_cls():
    dist = IldDistance(pad_mode="exclude", relation_pad_mode="exclude", attention_kl=True,
                       relation_heads=1, cls_layers=2)
    s, t = torch.ones(2, 3, 4), torch.full((2, 3, 4), 3.0)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert float(dist("hidden", s, t, mask)) == pytest.approx(4.0)  # (1 - 3)^2
    assert float(dist("hidden", s, t, mask, projection=lambda x: 3 * x)) == 0.0
    scores = torch.randn(2, 1, 3, 3)
    assert float(dist("attention", scores, scores, mask, projection=lambda x: 0 * x)) == 0.0
    one_layer = IldDistance("exclude", "exclude", True, 1, cls_layers=1)
    cls_s, cls_t = torch.randn(2, 4), torch.randn(2, 4)
    assert float(dist("cls", cls_s, cls_t, mask)) == pytest.approx(
        float(one_layer("cls", cls_s, cls_t, mask)) / 2)  # a mean over the 2 mapped layers


def test_emd_attention_cost_of_the_variant():
    assert ild_emd.attention_cost("variant", "release") == "mse"
    assert ild_emd.attention_cost("variant", "bert_emd") == "kl"
    assert ild_emd.attention_cost("kl", "release") == "kl"


# --------------------------------------------------------------------------- consistency


def test_consistency_ramp_over_epochs_updates_or_flat():
    # over --max-epoch 4, epochs counted from 0: fairseq epoch e gives 0.1 * (e - 1) / 4
    assert [consistency.consistency_weight_now(0.1, 4, 0, e, 0) for e in (1, 2, 3, 5, 9)] == [
        0.0, pytest.approx(0.025), pytest.approx(0.05), pytest.approx(0.1), pytest.approx(0.1)]
    # no --max-epoch: over --max-update
    assert consistency.consistency_weight_now(0.2, 0, 10, 1, 5) == pytest.approx(0.1)
    assert consistency.consistency_weight_now(0.2, 0, 0, 7, 99) == 0.2  # nothing to ramp over
    assert consistency.consistency_weight_now(0.0, 4, 0, 3, 0) == 0.0


def test_micro_batch_counter_restarts_at_each_update():
    counter = consistency.MicroBatchCounter()
    assert [counter.next(u) for u in (0, 0, 0, 1, 1, 3)] == [0, 1, 2, 0, 1, 0]


def test_mixup_draws_are_a_function_of_seed_update_and_micro_batch():
    draw = consistency.draw_mixup
    a = draw(1, 7, 0, 4, 1.0, "reverse", torch.device("cpu"))
    b = draw(1, 7, 0, 4, 1.0, "reverse", torch.device("cpu"))
    assert a.lam == b.lam and 0.5 <= a.lam <= 1.0
    assert a.partner.tolist() == [3, 2, 1, 0]  # the authors' partner of i: B - 1 - i
    assert draw(1, 7, 1, 4, 1.0, "reverse", torch.device("cpu")).lam != a.lam
    perm = draw(1, 7, 0, 5, 1.0, "random", torch.device("cpu")).partner
    assert sorted(perm.tolist()) == [0, 1, 2, 3, 4]


def test_consistency_term_skips_the_embedding_output_and_other_objects():
    mixup = MixupSpec(lam=0.75, partner=torch.tensor([1, 0]))
    clean = {"hidden.emb": torch.randn(2, 3, 4), "hidden.0": torch.randn(2, 3, 4),
             "attention.0": torch.randn(2, 1, 3, 3)}
    mixed = {k: v + 1 for k, v in clean.items()}
    mask = torch.ones(2, 3, dtype=torch.bool)
    seen = []

    def distance_of(obj):
        def distance(a, b, m=None):
            seen.append(obj)
            return (a - b).pow(2).mean()
        return distance

    total = consistency.consistency_term(mixed, clean, ["hidden"], mixup, mask, distance_of)
    # hidden.0 only (both terms): not the mixing point hidden.emb, not attention
    assert seen == ["hidden", "hidden"]
    # lam * l(mixed, clean) + (1 - lam) * l(mixed, the partner's clean)
    m, c = mixed["hidden.0"], clean["hidden.0"]
    expected = 0.75 * (m - c).pow(2).mean() + 0.25 * (m - c[[1, 0]]).pow(2).mean()
    assert float(total) == pytest.approx(float(expected))


# --------------------------------------------------------------------------- fit_dense, EMA


def test_fit_dense_and_when_it_is_built():
    torch.manual_seed(0)
    layer = ild_targets.fit_dense(64, 128)
    assert tuple(layer.weight.shape) == (128, 64) and torch.equal(layer.bias, torch.zeros(128))
    assert float(layer.weight.detach().std()) == pytest.approx(0.02, rel=0.05)  # BERT's N(0, 0.02)
    wants = ild_targets.wants_projection
    assert wants(["hidden"], "when-widths-differ", 8, 16)
    assert not wants(["hidden"], "when-widths-differ", 16, 16)
    assert wants(["cls"], "always", 16, 16)
    assert not wants(["qkv", "attention"], "always", 8, 16)  # no hidden-state loss
    assert ild_targets.build_projection(["qkv"], "always", 8, 16) is None


def test_ema_steps_once_per_optimizer_step():
    student = nn.Linear(2, 2)
    ema = ild_targets.build_ema(student)
    assert not any(p.requires_grad for p in ema.parameters())
    counter = ild_targets.ema_counter()
    start = ema.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    assert not ild_targets.update_ema(ema, counter, student, 0, 0.5)  # no step done yet
    assert ild_targets.update_ema(ema, counter, student, 1, 0.5)
    assert torch.allclose(ema.weight, 0.5 * start + 0.5 * student.weight)
    assert not ild_targets.update_ema(ema, counter, student, 1, 0.5)  # same step: once
    assert int(counter) == 1


# --------------------------------------------------------------------------- freezing


def test_freeze_unreached_freezes_what_the_features_ignore():
    class Toy(nn.Module):
        padding_idx = 1

        def __init__(self):
            super().__init__()
            self.emb, self.used, self.unused = nn.Embedding(8, 3), nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, tokens, request=None):
            x = self.emb(tokens)
            return None, {"a": self.used(x), "b": self.unused(x)}

    toy = Toy()
    frozen = freeze_unreached(toy, 0, feature_request(["hidden"], [0], None),
                              lambda extra: [extra["a"]])
    assert frozen == 3 * 3 + 3
    assert [n for n, p in toy.named_parameters() if p.requires_grad] == [
        "emb.weight", "used.weight", "used.bias"]


# --------------------------------------------------------------------------- precision


def test_fp32_children_stay_fp32_through_half_and_to():
    class Owner(KeepsFp32Children):
        fp32_children = ("ema", "absent")

        def __init__(self):
            super().__init__()
            self.proj, self.ema = nn.Linear(2, 2), nn.Linear(2, 2)

    owner = Owner()
    assert owner.half() is owner
    assert owner.proj.weight.dtype == torch.float16 and owner.ema.weight.dtype == torch.float32
    assert owner.to(torch.bfloat16) is owner
    assert owner.proj.weight.dtype == torch.bfloat16 and owner.ema.weight.dtype == torch.float32
