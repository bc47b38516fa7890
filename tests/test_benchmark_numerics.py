"""Numerics of the fast paths the benchmark measures: fused attention and bf16 training."""

import os

import pytest
import torch
from fairseq import options

from fairseq_crild.criterions.cr_ild import CrIldConfig, CrIldCriterion
from fairseq_crild.criterions.kd import KdCriterion
from fairseq_crild.models import BertConfig, BertModel, FeatureRequest, MixupSpec
from tests.conftest import run_script
from tests.helpers_task import OneTeacherTask
from tests.test_distill_criterions import _sample

PAD = 1


def _bert(layers=3, dim=32, heads=4, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                     encoder_ffn_embed_dim=2 * dim, max_position_embeddings=32, dropout=0.0,
                     attention_dropout=0.0, pooler_dropout=0.0)
    model = BertModel(cfg, vocab_size=30, padding_idx=PAD)
    model.register_classification_head("glue", num_classes=2)
    return model


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("mixup", [False, True])
def test_fused_attention_matches_the_explicit_path(padded, mixup):
    """Layers whose scores are requested run softmax(QK^T/sqrt(d)) explicitly, the others
    scaled_dot_product_attention: both must give the same outputs."""
    model = _bert().train()  # dropout 0: train mode takes the same paths as in training
    tokens = torch.randint(5, 30, (4, 11))
    if padded:
        tokens[1, 6:] = PAD
        tokens[3, 2:] = PAD
    spec = MixupSpec(0.7, torch.tensor([3, 2, 1, 0])) if mixup else None
    every = frozenset(range(model.num_layers))
    fused, f_extra = model(tokens, request=FeatureRequest(hidden_states=True, mixup=spec))
    explicit, e_extra = model(tokens, request=FeatureRequest(
        hidden_states=True, attention_scores=every, mixup=spec))
    assert set(e_extra["attention_scores"]) == every
    assert (fused - explicit).abs().max() <= 1e-5
    for a, b in zip(f_extra["hidden_states"], e_extra["hidden_states"]):
        assert (a - b).abs().max() <= 1e-5
    # gradients agree too (the student backpropagates through whichever path it took)
    g_fused = torch.autograd.grad(fused.square().sum(), model.layers[0].attention.q_proj.weight)
    g_expl = torch.autograd.grad(explicit.square().sum(),
                                 model.layers[0].attention.q_proj.weight)
    assert torch.allclose(g_fused[0], g_expl[0], atol=1e-5, rtol=1e-4)


class _Task(OneTeacherTask):
    def __init__(self, teacher):
        super().__init__(teacher, current_epoch=2)


@pytest.mark.parametrize("criterion", ["kd", "cr_ild", "tinybert"])
def test_bf16_student_gets_fp32_losses_close_to_fp32(criterion):
    sample = _sample()
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        teacher, student = _bert(4, 32, 4, 0), _bert(2, 32, 4, 1)
        task = _Task(teacher)
        if criterion == "kd":
            crit = KdCriterion(task, temperature=2.0, alpha=0.0)
        else:
            preset = {"cr_ild": dict(ild_preset="cr_ild", consistency_on_relations=True,
                                     num_relation_heads=4),
                      "tinybert": dict(ild_preset="tinybert")}[criterion]
            crit = CrIldCriterion(CrIldConfig(max_epoch=4, max_update=0, **preset), task)
            crit.prepare_student(student)
        student.to(dtype)
        crit.to(dtype)
        torch.manual_seed(5)  # same mixup draw for both precisions
        loss, n, log = crit(student.eval() if criterion == "kd" else student.train(), sample)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)
        losses[dtype] = float(loss.detach())
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=0.05, abs=1e-3)


def test_bf16_keeps_the_ema_target_in_fp32():
    teacher, student = _bert(4, 32, 4, 0), _bert(2, 32, 4, 1)
    crit = CrIldCriterion(CrIldConfig(max_epoch=4, max_update=0, ild_preset="cr_ild",
                                      consistency_target="ema", num_relation_heads=4),
                          _Task(teacher))
    crit.prepare_student(student)
    student.to(torch.bfloat16)
    crit.to(dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in crit.ema_model.parameters())


def test_cpu_bf16_is_not_turned_into_tpu():
    """fairseq's parser makes --bf16 imply --tpu; without torch_xla that dies in the
    trainer. Every bert architecture undoes it."""
    for arch in ("bert", "bert_tiny"):
        args = options.parse_args_and_arch(options.get_training_parser(), input_args=[
            "/nonexistent", "--user-dir", "fairseq_crild", "--task", "distill_glue",
            "--arch", arch, "--cpu", "--bf16", "--criterion", "kd"])
        assert args.bf16 and not args.tpu


def test_fairseq_train_cpu_bf16_runs_cr_ild(tiny_env, tmp_path):
    """--cpu --bf16 end to end: CR-ILD stage 1 with an EMA target (2 epochs of 2 updates:
    the consistency term ramps up from 0 in epoch 1), losses finite, the EMA kept fp32."""
    teacher = tmp_path / "teacher.pt"
    state = torch.load(str(tiny_env["ckpt"] / "model.pt"), map_location="cpu")
    dim = state["model"]["pooler.weight"].shape[0]
    state["model"]["classification_heads.glue.out_proj.weight"] = torch.randn(2, dim) * 0.02
    state["model"]["classification_heads.glue.out_proj.bias"] = torch.zeros(2)
    torch.save(state, teacher)
    out = run_script(
        "-m", "fairseq_cli.train", str(tiny_env["data"]), "--user-dir", "fairseq_crild",
        "--task", "distill_glue", "--cpu", "--bf16", "--num-workers", "0", "--arch", "bert",
        "--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-attention-heads", "4",
        "--encoder-ffn-embed-dim", "64", "--max-position-embeddings", "128",
        "--criterion", "cr_ild", "--teacher-path", str(teacher), "--init-student-from",
        str(tiny_env["ckpt"] / "model.pt"), "--ild-preset", "cr_ild",
        "--consistency-on-relations", "--consistency-target", "ema", "--max-epoch", "2",
        "--train-subset-size", "16",
        "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed", "--batch-size", "8",
        "--max-positions", "64", "--disable-validation", "--log-format", "simple",
        "--log-interval", "1", "--no-epoch-checkpoints", "--save-dir", str(tmp_path / "s1"))
    logs = out.stdout + out.stderr
    assert "loss_qkv" in logs and "loss_cons" in logs and "nan" not in logs.lower()
    saved = torch.load(os.path.join(tmp_path, "s1", "checkpoint_last.pt"), map_location="cpu")
    ema = {k: v for k, v in saved["criterion"].items() if k.startswith("ema_model.")}
    assert ema and all(v.dtype == torch.float32 for v in ema.values() if v.is_floating_point())
