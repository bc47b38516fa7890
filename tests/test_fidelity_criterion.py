"""cr_ild against the authors' method, on tiny random models: padding counted as on their
B x 128 grid, fit_dense, TinyBERT's uniform map with the embedding pair, the EMA target
and the two CR-ILD presets (the paper's method and the authors' released script).

Every expected value is computed here from the method's formulas by plain loops in float64 (or
from the pure loss functions, themselves checked by hand in test_losses.py), never copied
from the criterion's own output.
"""

import logging
import os
from functools import partial

import pytest
import torch

from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.distill import losses
from fairseq_crild.models import FeatureRequest
from fairseq_crild.models.requests import MixupSpec
from fairseq_crild.patches.distributed import batch_generator
from tests.helpers_bert import toy_bert
from tests.test_distill_criterions import _bert, _sample, _step, _Task


class _PadTask(_Task):
    """The fake task plus the real task's hook for padding every batch to one length."""

    def __init__(self, teacher):
        super().__init__(teacher)
        self.cfg.max_positions = 128
        self.padded_to = []

    def pad_every_batch_to(self, length: int) -> None:
        self.padded_to.append(length)


def _crit(task, student, **overrides):
    crit = CrIldCriterion(CrIldConfig(**{"max_epoch": 4, "max_update": 0, **overrides}), task)
    crit.prepare_student(student)
    return crit


def _hidden(model, sample, request=None):
    with torch.no_grad():
        _, extra = model(**sample["net_input"],
                         request=request or FeatureRequest(hidden_states=True))
    return extra


def _mse64(a, b, mask=None):
    """Plain-loop mean of squared differences over (b, l, d), only real (b, l) if mask."""
    a, b = a.double().tolist(), b.double().tolist()
    total, n = 0.0, 0
    for i, (ra, rb) in enumerate(zip(a, b)):
        for j, (va, vb) in enumerate(zip(ra, rb)):
            if mask is not None and not mask[i][j]:
                continue
            total += sum((x - y) ** 2 for x, y in zip(va, vb))
            n += len(va)
    return total / n


# --------------------------------------------------------------------------- padding


def test_padded_mode_averages_hidden_mse_over_every_position():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    task, sample = _PadTask(teacher), _sample()
    crit = _crit(task, student.eval(), ild_preset="custom", ild_padding="include")
    assert task.padded_to == [128] and crit.projection is None
    _, _, log = crit(student, sample)
    h_s, h_t = _hidden(student, sample)["hidden_states"][-1], _hidden(teacher, sample)[
        "hidden_states"][-1]
    assert float(log["loss_hidden"]) / 4 == pytest.approx(_mse64(h_s, h_t), rel=1e-5)
    mask = sample["net_input"]["src_tokens"].ne(1).tolist()
    assert _mse64(h_s, h_t) != pytest.approx(_mse64(h_s, h_t, mask), rel=1e-3)  # padding seen
    # the default excludes padding and leaves the batches dynamic
    task2 = _PadTask(teacher)
    crit2 = _crit(task2, student, ild_preset="custom")
    _, _, log2 = crit2(student, sample)
    assert task2.padded_to == []
    assert float(log2["loss_hidden"]) / 4 == pytest.approx(_mse64(h_s, h_t, mask), rel=1e-5)


def test_padded_mode_averages_attention_ce_over_every_query_row():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    sample = _sample()
    crit = _crit(_PadTask(teacher), student.eval(), ild_preset="custom",
                 ild_objects="attention", ild_padding="include", attention_loss="ce")
    _, _, log = crit(student, sample)
    req = FeatureRequest(attention_scores=frozenset({1}))
    s = _hidden(student, sample, req)["attention_scores"][1].double()
    t = _hidden(teacher, sample, req)["attention_scores"][1].double()
    real = sample["net_input"]["src_tokens"].ne(1)
    total, rows = 0.0, 0
    for b in range(4):
        keys = real[b].nonzero().flatten()  # padded keys leave the softmax (attention mask)
        for h in range(2):
            for q in range(7):  # every query, padded ones included
                p_t = torch.softmax(t[b, h, q, keys], -1)
                total += float(-(p_t * torch.log_softmax(s[b, h, q, keys], -1)).sum())
                rows += 1
    assert float(log["loss_attention"]) / 4 == pytest.approx(total / rows, rel=1e-5)


def test_relation_padding_include_implies_or_refuses_padding_to_max_positions():
    teacher, student = _bert(2, 16, 2, 0), _bert(1, 16, 2, 1)
    task = _PadTask(teacher)
    crit = _crit(task, student, ild_preset="l_ild", relation_padding="include")
    assert task.padded_to == [128]
    assert (crit.options.pad_mode, crit.options.relation_pad_mode) == ("exclude", "include")
    release = _PadTask(teacher)
    crit = _crit(release, student, ild_preset="cr_ild_release")
    assert release.padded_to == [128]
    assert (crit.options.pad_mode, crit.options.relation_pad_mode) == ("include", "include")
    with pytest.raises(ValueError, match="pad_every_batch_to.*--ild-padding exclude"):
        _crit(_Task(teacher), student, ild_preset="l_ild", relation_padding="include")
    untouched = _PadTask(teacher)
    _crit(untouched, student, ild_preset="cr_ild")
    assert untouched.padded_to == []


# --------------------------------------------------------------------------- fit_dense


def test_fit_dense_projects_the_student_also_at_equal_widths():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    sample = _sample()
    crit = _crit(_Task(teacher), student.eval(), ild_preset="custom",
                 hidden_projection="always")
    w = crit.projection
    assert isinstance(w, torch.nn.Linear) and w.weight.shape == (16, 16)
    # BERT's initialisation, N(0, 0.02) and a zero bias, as the authors' fit_dense
    assert torch.all(w.bias == 0) and 0.01 < float(w.weight.detach().std()) < 0.03
    _, n, log = crit(student, sample)
    h_s, h_t = _hidden(student, sample)["hidden_states"][-1], _hidden(teacher, sample)[
        "hidden_states"][-1]
    mask = sample["net_input"]["src_tokens"].ne(1).tolist()
    with torch.no_grad():
        projected = h_s.double() @ w.weight.double().T + w.bias.double()  # teacher unprojected
    assert float(log["loss_hidden"]) / n == pytest.approx(_mse64(projected, h_t, mask), rel=1e-5)
    assert float(log["loss_hidden"]) / n != pytest.approx(_mse64(h_s, h_t, mask), rel=1e-2)
    # the presets: the authors' fit_dense for tinybert, pkd and emd, not for the others
    for preset, projected in (("tinybert", True), ("pkd", True), ("emd", True),
                              ("custom", False)):
        crit = _crit(_Task(teacher), _bert(2, 16, 2, 1), ild_preset=preset)
        assert (crit.projection is not None) == projected, preset
    crit = _crit(_Task(teacher), _bert(2, 16, 2, 1), ild_preset="tinybert",
                 hidden_projection="when-widths-differ")
    assert crit.projection is None


def test_fit_dense_reaches_pkd_cls_vectors():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    sample = _sample()
    crit = _crit(_Task(teacher), student.eval(), ild_preset="pkd", ild_layer_map="last")
    _, n, log = crit(student, sample)
    s_cls = _hidden(student, sample)["hidden_states"][-1][:, 0]
    t_cls = _hidden(teacher, sample)["hidden_states"][-1][:, 0]
    w = crit.projection
    with torch.no_grad():
        projected = s_cls.double() @ w.weight.double().T + w.bias.double()

    def pkd64(a, b):  # one mapped layer: mean over batch x hidden of (a/|a| - b/|b|)^2
        a, b = a.double().tolist(), b.double().tolist()
        total = 0.0
        for va, vb in zip(a, b):
            na, nb = sum(x * x for x in va) ** 0.5, sum(y * y for y in vb) ** 0.5
            total += sum((x / na - y / nb) ** 2 for x, y in zip(va, vb))
        return total / (len(a) * len(a[0]))

    # the ratio to the same loss through an identity projection is free of the loss's
    # constant scale (test_pkd_scale.py pins that) and shows W reaches the vectors
    with torch.no_grad():
        w.weight.copy_(torch.eye(16))
        w.bias.zero_()
    _, _, log_identity = crit(student, sample)
    ratio = float(log["loss_cls"]) / float(log_identity["loss_cls"])
    assert ratio == pytest.approx(pkd64(projected, t_cls) / pkd64(s_cls, t_cls), rel=1e-5)
    assert abs(ratio - 1) > 1e-2


def _fairseq_cfg(tiny_env, tmp_path, *extra):
    """The config fairseq-train builds for a stage-1 run on the tiny converted BERT."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    teacher = tmp_path / "teacher.pt"
    state = torch.load(str(tiny_env["ckpt"] / "model.pt"), map_location="cpu")
    dim = state["model"]["pooler.weight"].shape[0]
    state["model"]["classification_heads.glue.out_proj.weight"] = torch.randn(2, dim) * 0.02
    state["model"]["classification_heads.glue.out_proj.bias"] = torch.zeros(2)
    torch.save(state, teacher)
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=[
        str(tiny_env["data"]), "--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu",
        "--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", str(dim),
        "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
        "--max-position-embeddings", "128", "--criterion", "cr_ild", "--teacher-path",
        str(teacher), "--init-student-from", str(tiny_env["ckpt"] / "model.pt"),
        "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed", "--max-update", "1",
        "--max-positions", "64", "--batch-size", "4", "--save-dir", str(tmp_path / "save"),
        *extra])
    return convert_namespace_to_omegaconf(args), dim


def test_release_preset_pads_every_batch_of_the_real_task(tiny_env, tmp_path):
    from fairseq import tasks

    cfg, _ = _fairseq_cfg(tiny_env, tmp_path, "--ild-preset", "cr_ild_release",
                          "--num-relation-heads", "4")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")  # loaded before the criterion, as fairseq-train does
    task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    for split in ("train", "valid"):
        data = task.dataset(split)
        short = sorted(range(len(data)), key=data.size)[:3]  # dynamic: shorter than 64
        assert max(data.size(i) for i in short) < 64
        batch = data.collater([data[i] for i in short])
        assert batch["net_input"]["src_tokens"].shape[1] == 64, split  # --max-positions


def test_fit_dense_is_saved_and_reloaded_by_a_resumed_run(tiny_env, tmp_path):
    """fairseq's trainer saves criterion parameters and loads them back on resume."""
    from fairseq import tasks
    from fairseq.trainer import Trainer

    cfg, dim = _fairseq_cfg(tiny_env, tmp_path, "--ild-preset", "tinybert", "--ild-layer-map",
                            "0:1,1:3")

    def trainer():
        task = tasks.setup_task(cfg.task)
        model = task.build_model(cfg.model)
        return Trainer(cfg, task, model, task.build_criterion(cfg.criterion))

    first = trainer()
    proj = first.get_criterion().projection
    assert proj is not None and proj.weight.shape == (dim, dim)  # equal widths, fit_dense
    with torch.no_grad():
        proj.weight.add_(torch.randn_like(proj.weight))  # as if trained
    path = str(tmp_path / "checkpoint_last.pt")
    first.consolidate_optimizer()  # as fairseq.checkpoint_utils.save_checkpoint does
    first.save_checkpoint(path, {})
    resumed = trainer()
    assert not torch.equal(resumed.get_criterion().projection.weight, proj.weight)
    resumed.load_checkpoint(path)
    assert torch.equal(resumed.get_criterion().projection.weight, proj.weight)
    assert torch.equal(resumed.get_criterion().projection.bias, proj.bias)
    assert os.path.isfile(path)


# --------------------------------------------------------------------------- TinyBERT map


def test_tinybert_uniform_map_pairs_the_embedding_outputs():
    teacher, student = _bert(6, 16, 2, 0), _bert(3, 16, 2, 1)
    sample = _sample()
    crit = _crit(_Task(teacher), student.eval(), ild_preset="tinybert")
    assert crit.layers.hidden_pairs == [(0, 0), (1, 2), (2, 4), (3, 6)]  # hidden-state indices
    assert crit.layers.layer_map == [(0, 1), (1, 3), (2, 5)]  # attention: 0-based layers
    _, n, log = crit(student, sample)
    hs, ht = _hidden(student, sample)["hidden_states"], _hidden(teacher, sample)["hidden_states"]
    mask = sample["net_input"]["src_tokens"].ne(1).tolist()
    w = crit.projection
    with torch.no_grad():
        proj = [h.double() @ w.weight.double().T + w.bias.double() for h in hs]
    expected = sum(_mse64(proj[i], ht[j], mask) for i, j in [(0, 0), (1, 2), (2, 4), (3, 6)])
    assert float(log["loss_hidden"]) / n == pytest.approx(expected, rel=1e-5)
    # switched off: the layer outputs only; the last map never has the embedding pair
    off = _crit(_Task(teacher), student, ild_preset="tinybert", uniform_embedding_pair="off")
    assert off.layers.hidden_pairs == [(1, 2), (2, 4), (3, 6)]
    last = _crit(_Task(teacher), student, ild_preset="tinybert", ild_layer_map="last")
    assert last.layers.hidden_pairs == [(3, 6)]


# --------------------------------------------------------------------------- EMA target


_dropout_bert = partial(toy_bert, dropout=0.3)  # (layers, dim, heads, seed)


def test_ema_is_updated_after_the_first_step_even_without_consistency_yet():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    task = _Task(teacher)
    task.current_epoch = 1  # epoch 0 from 0: the ramped consistency weight is still 0
    crit = _crit(task, student.train(), ild_preset="cr_ild", consistency_target="ema",
                 num_relation_heads=2, ema_decay=0.5)
    init = {k: v.clone() for k, v in crit.ema_model.state_dict().items()}
    opt, _, log = _step(crit, student, _sample())
    assert "loss_cons" not in log and float(log["w_cons"]) == 0.0
    opt.step()
    task.num_updates = 1
    _step(crit, student, _sample())
    for name, p in student.named_parameters():
        assert torch.allclose(crit.ema_model.state_dict()[name], 0.5 * init[name] + 0.5 * p), name
    assert int(crit.ema_updates) == 1


def test_ema_target_runs_in_eval_mode():
    teacher, student = _bert(2, 16, 2, 0), _dropout_bert(2, 16, 2, 1)
    task = _Task(teacher)
    task.current_epoch = 3
    crit = _crit(task, student.train(), ild_preset="cr_ild", consistency_target="ema",
                 num_relation_heads=2)
    crit.train()  # as fairseq's trainer does, which would put the EMA copy in train mode
    seen = []
    crit.ema_model.register_forward_hook(
        lambda mod, args, out: seen.append((mod.training, out[1]["qkv"][1]["v"].clone())))
    sample = _sample()
    for _ in range(2):
        _, _, log = crit(student, sample)
    assert "loss_cons" in log and len(seen) == 2
    assert not seen[0][0] and not seen[1][0]
    assert torch.equal(seen[0][1], seen[1][1])  # no dropout: both target passes equal
    crit.ema_model.train()  # the same copy in train mode would not be deterministic
    req = FeatureRequest(qkv=frozenset({1}))
    with torch.no_grad():
        a = crit.ema_model(**sample["net_input"], request=req)[1]["qkv"][1]["v"]
        b = crit.ema_model(**sample["net_input"], request=req)[1]["qkv"][1]["v"]
    assert not torch.equal(a, b)


# --------------------------------------------------------------------------- presets


def test_cr_ild_preset_regularises_the_relations_from_epoch_one():
    teacher, student = _bert(4, 16, 4, 0), _bert(2, 16, 4, 1)
    task = _Task(teacher)
    sample = _sample()
    task.current_epoch = 1  # epoch 0: ramp 0, no term yet, the ramp is logged
    crit = _crit(task, student.train(), ild_preset="cr_ild", num_relation_heads=4)
    assert crit.options.consistency_objects == ["qkv"]
    _, _, log = crit(student, sample)
    assert "loss_cons" not in log and float(log["w_cons"]) == 0.0
    task.current_epoch, task.num_updates = 2, 5  # epoch 1 of 4 (from 0): w = 0.1 * 1 / 4
    loss, n, log = crit(student, sample)
    assert float(log["w_cons"]) / n == pytest.approx(0.025)
    cons = float(log["loss_cons"]) / n
    assert cons > 1e-6
    assert float(loss) / n == pytest.approx(float(log["loss_ild"]) / n + 0.025 * cons, rel=1e-6)
    # the term by hand: the same (lam, partner) draw, the student's relations of the mixed
    # input against its clean relations and its partner's: lam * l(mix, x_i) + (1 - lam) *
    # l(mix, x_j), the paper's L_cons
    rng = batch_generator(1, 5, 0)
    lam = losses.sample_mixup_lambda(1.0, generator=rng)
    partner = losses.mixup_partner(4, "reverse", generator=rng)
    req = FeatureRequest(qkv=frozenset({1}), mixup=MixupSpec(lam=lam, partner=partner))
    mixed = _hidden(student, sample, req)
    clean = _hidden(student, sample, FeatureRequest(qkv=frozenset({1})))
    expected = losses.consistency_loss(
        partial(losses.relation_kl, num_relation_heads=4), mixed["qkv"][1], clean["qkv"][1],
        partner, lam, ~mixed["padding_mask"])
    assert cons == pytest.approx(float(expected), rel=1e-5)


def test_cr_ild_release_consistency_is_inert_and_says_so(caplog):
    teacher, student = _bert(4, 16, 4, 0), _bert(2, 16, 4, 1)
    sample = _sample()
    results = {}
    for weight in (0.1, 0.0):
        task = _PadTask(teacher)
        task.current_epoch, task.num_updates = 3, 7
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fairseq_crild.criterions.ild_presets"):
            crit = _crit(task, student.train(), ild_preset="cr_ild_release",
                         num_relation_heads=4, consistency_weight=weight)
        warned = any("acts on no object" in r.getMessage() for r in caplog.records)
        assert warned == (weight > 0)
        assert task.padded_to == [128] and crit.options.consistency_objects == []
        loss, n, log = crit(student, sample)
        assert "w_cons" not in log and "loss_cons" not in log and "lam" in log
        results[weight] = float(loss)
    assert results[0.1] == results[0.0]
    # cr_ild with the weight 0: no term acts, nothing logged about it
    crit = _crit(_Task(teacher), student, ild_preset="cr_ild", num_relation_heads=4,
                 consistency_weight=0.0)
    _, _, log = crit(student, sample)
    assert "w_cons" not in log


def test_consistency_objects_option_names_what_is_wrong():
    teacher, student = _bert(2, 16, 2, 0), _bert(2, 16, 2, 1)
    with pytest.raises(ValueError, match="--consistency-objects 'cls'"):
        _crit(_Task(teacher), student, ild_preset="cr_ild", ild_objects="qkv,cls",
              consistency_objects="cls")
    crit = _crit(_Task(teacher), student, ild_preset="cr_ild_release", num_relation_heads=2,
                 consistency_on_relations=True, ild_padding="exclude")
    assert (crit.options.consistency_objects == ["qkv"]
            and crit.options.consistency_acts is False)  # weight 0
