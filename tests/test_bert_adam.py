"""``--optimizer bert_adam`` and the no-decay groups, against a plain-Python reference.

The reference below is written from BertAdam's definition: moments without bias correction, a
per-parameter clip to norm 1 (torch's clip_grad_norm_ factor c / (norm + 1e-6)) before the
moment update, update = m / (sqrt(v) + eps) + wd * p times the lr, wd = 0 for biases and
LayerNorm weights (decided here from the names, the HF/authors' way).
"""

import math
import random

import pytest
import torch
from fairseq import optim
from omegaconf import OmegaConf
from torch import nn

import fairseq_crild  # noqa: F401  (registers bert_adam, installs the hooks)
from fairseq_crild.models import BertConfig, BertModel
from fairseq_crild.optim import BertAdam
from fairseq_crild.optim.param_groups import decay_groups, is_no_decay, tag_no_decay
from tests.conftest import run_script


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 3)
        self.layer_norm = nn.LayerNorm(3)
        self.out = nn.Linear(3, 2)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = Tiny().double()
    with torch.no_grad():  # LayerNorm starts at 1/0: make its decay (if any) visible
        model.layer_norm.weight.normal_(1.0, 0.3)
        model.layer_norm.bias.normal_(0.0, 0.3)
    return model


def build(name, params, **cfg):
    extra = {"tpu": False} if name == "adam" else {}  # adam's interpolated common.tpu
    cfg = OmegaConf.create({"_name": name, "lr": [0.01], **extra, **cfg})
    return optim.build_optimizer(cfg, params)


def authors_no_decay(name):
    return "bias" in name or "layer_norm" in name or "LayerNorm" in name


def gradient_schedule(model, steps, seed=1):
    """Per step and parameter a fixed random direction times a scale that makes the
    per-parameter norm sometimes below 1 (no clip) and mostly above (clip fires)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        step = {}
        for i, (name, p) in enumerate(model.named_parameters()):
            scale = [0.05, 4.0, 25.0][(t + i) % 3]
            step[name] = torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale
        out.append(step)
    return out


def lr_at(t):
    return 0.02 * min(1.0, (t + 1) / 5) * (1.0 - t / 40)  # warm-up then decay, as scheduled


def reference(init, grads, steps, clip, wd, decay_all, global_clip, betas=(0.9, 0.999),
              eps=1e-6, coupling=0.5):
    """Plain-Python floats: returns final params and how often each clip fired."""
    params = {n: [float(x) for x in v.flatten().tolist()] for n, v in init.items()}
    m = {n: [0.0] * len(v) for n, v in params.items()}
    v2 = {n: [0.0] * len(v) for n, v in params.items()}
    fired = {"global": 0, "param": 0, "param_not": 0}
    for t in range(steps):
        g = {n: [gi + coupling * pi for gi, pi in zip(grads[t][n].flatten().tolist(), params[n])]
             for n in params}
        total = math.sqrt(sum(x * x for vals in g.values() for x in vals))
        coef = min(1.0, global_clip / (total + 1e-6))
        fired["global"] += coef < 1.0
        g = {n: [x * coef for x in vals] for n, vals in g.items()}
        for n in params:
            gn = g[n]
            if clip > 0:
                norm = math.sqrt(sum(x * x for x in gn))
                c = min(1.0, clip / (norm + 1e-6))
                fired["param" if c < 1.0 else "param_not"] += 1
                gn = [x * c for x in gn]
            decay = wd if (decay_all or not authors_no_decay(n)) else 0.0
            for k in range(len(gn)):
                m[n][k] = betas[0] * m[n][k] + (1 - betas[0]) * gn[k]
                v2[n][k] = betas[1] * v2[n][k] + (1 - betas[1]) * gn[k] * gn[k]
                update = m[n][k] / (math.sqrt(v2[n][k]) + eps) + decay * params[n][k]
                params[n][k] -= lr_at(t) * update
    return params, fired


def run_ours(model, grads, steps, global_clip, coupling=0.5, **cfg):
    tag_no_decay(model)
    opt = build("bert_adam", list(model.parameters()), **cfg)
    named = dict(model.named_parameters())
    for t in range(steps):
        opt.zero_grad()
        for n, p in named.items():
            p.grad = grads[t][n] + coupling * p.detach()
        torch.nn.utils.clip_grad_norm_(list(named.values()), global_clip)  # --clip-norm
        opt.set_lr(lr_at(t))
        opt.step()
    return opt


@pytest.mark.parametrize("clip,wd,decay_all", [(1.0, 0.01, False), (1.0, 0.3, False),
                                               (0.0, 0.3, True)])
def test_thirty_steps_equal_the_plain_loop(clip, wd, decay_all):
    model, steps = tiny_model(), 30
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = gradient_schedule(model, steps)
    ref, fired = reference(init, grads, steps, clip, wd, decay_all, global_clip=30.0)
    run_ours(model, grads, steps, global_clip=30.0, weight_decay=wd,
             per_param_clip_norm=clip, decay_bias_and_norm=decay_all)
    if clip > 0:
        assert fired["param"] > 0 and fired["param_not"] > 0  # both branches taken
    assert fired["global"] > 0
    worst = 0.0
    for n, p in model.named_parameters():
        assert p.dtype == torch.float64
        mine = p.detach().flatten().tolist()
        worst = max(worst, max(abs(a - b) for a, b in zip(mine, ref[n])))
    assert worst < 1e-10
    moved = max((p.detach() - init[n]).abs().max().item() for n, p in model.named_parameters())
    assert moved > 0.05  # the comparison is not between two unmoved models


def test_no_bias_correction_first_step():
    """Step 1 of a lone parameter: m = 0.1 g, v = 0.001 g^2, so the update is lr * 0.1 /
    sqrt(0.001) = 3.162 lr per unit-sign element (bias-corrected Adam would move lr)."""
    p = nn.Parameter(torch.zeros(4, 3, dtype=torch.float64))
    opt = BertAdam([p], lr=0.1, weight_decay=0.0, max_grad_norm=0.0, eps=1e-12)
    p.grad = torch.full_like(p, 0.5)
    opt.step()
    expected = -0.1 * (0.1 * 0.5) / (math.sqrt(0.001) * 0.5 + 1e-12)
    assert abs(expected + 0.1 * math.sqrt(10)) < 1e-9
    assert torch.allclose(p.detach(), torch.full_like(p, expected), atol=1e-15, rtol=0)


def test_bias_and_layer_norm_get_no_decay():
    """Zero gradients after a first step: only the decay term moves a parameter, so biases
    and LayerNorm weights stay where they are and every other weight shrinks by lr*wd."""
    model = tiny_model()
    tag_no_decay(model)
    opt = build("bert_adam", list(model.parameters()), weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.set_lr(0.5)
    opt.step()
    for n, p in model.named_parameters():
        if authors_no_decay(n):
            assert torch.equal(p.detach(), before[n]), n
        else:
            assert torch.allclose(p.detach(), before[n] * (1 - 0.5 * 0.1), atol=1e-14), n
    groups = opt.param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def bert():
    torch.manual_seed(0)
    cfg = BertConfig(encoder_layers=2, encoder_embed_dim=16, encoder_attention_heads=2,
                     encoder_ffn_embed_dim=32, max_position_embeddings=32)
    model = BertModel(cfg, vocab_size=20, padding_idx=1)
    model.register_classification_head("glue", num_classes=3)
    return model


def group_names(model, opt):
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in opt.param_groups]


@pytest.mark.parametrize("name", ["adam", "bert_adam"])
def test_groups_of_our_bert(name):
    model = bert()
    tag_no_decay(model)
    opt = build(name, list(model.parameters()), weight_decay=0.05)
    (decayed, wd), (exempt, zero) = group_names(model, opt)
    everything = {n for n, _ in model.named_parameters()}
    assert (wd, zero) == (0.05, 0.0)
    assert exempt == {n for n in everything if authors_no_decay(n)}
    assert decayed == everything - exempt
    assert {"embeddings.layer_norm.weight", "embeddings.layer_norm.bias", "pooler.bias",
            "layers.0.attn_layer_norm.weight", "layers.1.final_layer_norm.bias"} <= exempt
    assert {"embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight",
            "layers.0.attention.q_proj.weight", "pooler.weight"} <= decayed
    assert all(model.get_parameter(n).dim() == 2 for n in decayed)


@pytest.mark.parametrize("name,cfg", [("adam", {"weight_decay": 0.05, "decay_bias_and_norm": True}),
                                      ("adam", {"weight_decay": 0.0}),
                                      ("bert_adam", {"decay_bias_and_norm": True})])
def test_exemption_can_be_switched_off(name, cfg):
    model = bert()
    tag_no_decay(model)
    opt = build(name, list(model.parameters()), **cfg)
    assert len(opt.param_groups) == 1
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))


def test_rule_by_type_and_name_and_untagged_fallback():
    class HFStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.LayerNorm = nn.GroupNorm(1, 3)  # HF name, not an nn.LayerNorm
            self.scale = nn.Parameter(torch.ones(3))  # 1-D but neither bias nor LayerNorm

    m = HFStyle()
    assert is_no_decay(m.LayerNorm, "encoder.LayerNorm", "weight")
    assert is_no_decay(nn.LayerNorm(3), "x.norm_a", "weight")
    assert not is_no_decay(nn.Linear(2, 2), "x.dense", "weight")
    tag_no_decay(m)
    (decayed, exempt) = decay_groups(list(m.parameters()), 0.1)
    assert decayed["params"][0] is m.scale and len(exempt["params"]) == 2
    loose = [torch.zeros(3, 3), torch.zeros(3)]  # untagged: 1-D tensors are exempt
    groups = decay_groups(loose, 0.1)
    assert groups[0]["params"][0] is loose[0] and groups[1]["params"][0] is loose[1]


def test_flat_master_weights_are_refused():
    flat = nn.Parameter(torch.zeros(10))
    flat.crild_flat = True
    with pytest.raises(ValueError, match="--fp16-no-flatten-grads"):
        decay_groups([flat], 0.1)


def test_bad_settings_name_the_option():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="--per-param-clip-norm"):
        BertAdam([p], max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="--adam-eps"):
        BertAdam([p], eps=0.0)


def test_memory_efficient_low_precision_params_update_through_fp32():
    random.seed(0)
    p32 = nn.Parameter(torch.randn(8, 8))
    p16 = nn.Parameter(p32.detach().bfloat16())
    a, b = BertAdam([p32], lr=0.01), BertAdam([p16], lr=0.01)
    for _ in range(3):
        g = torch.randn(8, 8) * 3
        p32.grad, p16.grad = g.clone(), g.bfloat16()
        a.step(), b.step()
    assert b.state[p16]["exp_avg"].dtype == torch.float32
    assert (p16.float() - p32.detach()).abs().max().item() < 0.05


def parse(*extra):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["data", "--user-dir", "fairseq_crild", "--task",
                                                "distill_glue", "--arch", "bert_tiny", *extra])
    return convert_namespace_to_omegaconf(args)


def test_command_line_defaults_are_the_authors():
    cfg = parse("--optimizer", "bert_adam").optimizer
    assert (cfg.adam_eps, cfg.weight_decay, cfg.per_param_clip_norm) == (1e-6, 0.01, 1.0)
    assert tuple(cfg.adam_betas) == (0.9, 0.999) and not cfg.decay_bias_and_norm
    adam = parse("--optimizer", "adam", "--weight-decay", "0.01").optimizer
    assert adam.decay_bias_and_norm is False
    assert parse("--optimizer", "adam", "--decay-bias-and-norm").optimizer.decay_bias_and_norm


def test_fp32_master_copies_keep_the_tags():
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    model = bert().bfloat16()
    tag_no_decay(model)
    params = list(model.parameters())
    copies = FP16Optimizer.build_fp32_params(None, params, flatten=False)
    assert all(c.dtype == torch.float32 for c in copies)
    assert [c.crild_no_decay for c in copies] == [p.crild_no_decay for p in params]


class FakeTrainer:
    def __init__(self, optimizer, **common):
        flags = dict(fp16=True, bf16=False, amp=False, memory_efficient_fp16=False,
                     memory_efficient_bf16=False, fp16_no_flatten_grads=False)
        flags.update(common)
        self.cfg = OmegaConf.create({"common": flags, "optimizer": optimizer})
        self.model, self.criterion = bert(), nn.Linear(2, 2)


@pytest.mark.parametrize("optimizer,no_flatten", [
    ({"_name": "bert_adam"}, True),
    ({"_name": "adam", "weight_decay": 0.01}, True),
    ({"_name": "adam", "weight_decay": 0.01, "decay_bias_and_norm": True}, False),
    ({"_name": "adam", "weight_decay": 0.0}, False)])
def test_fp16_flat_master_weights_are_avoided_when_groups_are_needed(optimizer, no_flatten):
    from fairseq_crild.optim.param_groups import _trainer_build_optimizer

    trainer = FakeTrainer(optimizer)
    _trainer_build_optimizer(lambda self: None, trainer)
    assert trainer.cfg.common.fp16_no_flatten_grads is no_flatten
    assert trainer.model.pooler.bias.crild_no_decay and trainer.criterion.bias.crild_no_decay
    assert not trainer.model.pooler.weight.crild_no_decay


# ---- fairseq-train end to end (tiny_env of conftest) ----

COMMON = ["--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu", "--num-workers",
          "0", "--lr", "1e-3", "--batch-size", "8", "--max-positions", "64",
          "--log-format", "simple", "--log-interval", "1", "--no-epoch-checkpoints",
          "--seed", "3", "--arch", "bert_tiny", "--criterion", "glue_ce"]


def train(env, save_dir, *extra):
    return run_script("-m", "fairseq_cli.train", str(env["data"]), *COMMON, "--save-dir",
                      str(save_dir), *extra)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


BERT_ADAM = ["--optimizer", "bert_adam", "--clip-norm", "1.0", "--lr-scheduler",
             "polynomial_decay", "--warmup-updates", "2", "--total-num-update", "8"]


def test_fairseq_train_bert_adam_resumes_exactly(tiny_env, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_env, full, *BERT_ADAM, "--max-update", "4")
    train(tiny_env, part, *BERT_ADAM, "--max-update", "2")
    log = train(tiny_env, part, *BERT_ADAM, "--max-update", "4")
    assert "Loaded checkpoint" in log.stdout + log.stderr
    a, b = load(full / "checkpoint_last.pt"), load(part / "checkpoint_last.pt")
    assert a["optimizer_history"][-1]["optimizer_name"] == "FairseqBertAdam"
    opt = a["last_optimizer_state"]
    model = a["model"]
    exempt = sum(authors_no_decay(k) for k in model)
    assert [(g["weight_decay"], g["max_grad_norm"], g["eps"]) for g in opt["param_groups"]] \
        == [(0.01, 1.0, 1e-6), (0.0, 1.0, 1e-6)]
    assert len(opt["param_groups"][1]["params"]) == exempt
    assert len(opt["param_groups"][0]["params"]) == len(model) - exempt
    assert all(s["step"] == 4 for s in opt["state"].values())
    worst = max((model[k].float() - b["model"][k].float()).abs().max().item() for k in model)
    assert worst <= 1e-6
    for i, s in a["last_optimizer_state"]["state"].items():
        t = b["last_optimizer_state"]["state"][i]
        assert torch.allclose(s["exp_avg_sq"], t["exp_avg_sq"], rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "bert_adam"])
def test_fairseq_train_cpu_bf16_keeps_the_groups(tiny_env, tmp_path, optimizer):
    """--cpu --bf16: fp32 master copies (FP16Optimizer) carry the no-decay tags."""
    train(tiny_env, tmp_path, "--optimizer", optimizer, "--weight-decay", "0.1", "--bf16",
          "--lr-scheduler", "fixed", "--max-update", "2")
    state = load(tmp_path / "checkpoint_last.pt")
    model, opt = state["model"], state["last_optimizer_state"]
    assert state["cfg"]["common"]["bf16"]
    assert state["optimizer_history"][-1]["optimizer_name"] == "FP16Optimizer"  # the wrapper
    exempt = sum(authors_no_decay(k) for k in model)
    groups = opt["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert len(groups[1]["params"]) == exempt and exempt > 0
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt["state"].values())
