"""crild-benchmark --profile: the op classification (pure) and the per-class aggregation of
a real (tiny) profiler trace; no timings are checked."""

import pytest
import torch

from fairseq_crild.cli.benchmark_profile import (
    CLASSES,
    SCOPE_PREFIX,
    aggregate,
    classify_op,
    criterion_scopes,
    format_profile,
)


@pytest.mark.parametrize("name,parent,scope,expected", [
    ("aten::addmm", "aten::linear", "", "GEMM"),
    ("aten::mm", "AddmmBackward0", "", "GEMM"),
    ("aten::bmm", "aten::matmul", "", "GEMM"),
    ("aten::linear", "", "", "GEMM"),
    ("AddmmBackward0", "autograd::engine::evaluate_function: AddmmBackward0", "", "GEMM"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
     "", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "", "", "attention"),
    ("ScaledDotProductFlashAttentionForCpuBackward0", "", "", "attention"),
    ("aten::_softmax", "aten::softmax", "", "softmax"),
    ("aten::_log_softmax_backward_data", "LogSoftmaxBackward0", "", "softmax"),
    ("aten::native_layer_norm", "aten::layer_norm", "", "LayerNorm/GELU"),
    ("NativeLayerNormBackward0", "", "", "LayerNorm/GELU"),
    ("aten::gelu_backward", "GeluBackward0", "", "LayerNorm/GELU"),
    # the loss scope takes every non-cast op, its relation products and softmaxes too
    ("aten::bmm", "aten::matmul", "loss", "relation KL / loss"),
    ("aten::_log_softmax", "aten::log_softmax", "loss", "relation KL / loss"),
    ("aten::where", "", "loss", "relation KL / loss"),
    ("aten::index_select", "", "mixup", "mixup"),
    ("aten::mul", "", "mixup", "mixup"),
    # casts win over the loss / mixup scopes, not over the optimizer's
    ("aten::to", "", "", "casts"),
    ("aten::_to_copy", "aten::to", "loss", "casts"),
    ("aten::copy_", "aten::_to_copy", "", "casts"),
    ("aten::copy_", "", "mixup", "casts"),
    ("aten::_to_copy", "aten::to", "optimizer", "optimizer"),
    ("aten::addcdiv_", "", "optimizer", "optimizer"),
    ("aten::_foreach_add_", "", "", "optimizer"),
    # any other copy_ is its caller's
    ("aten::copy_", "aten::addmm", "", "GEMM"),
    ("aten::copy_", "aten::clone", "", "other"),
    ("aten::bernoulli_", "aten::dropout", "", "dropout"),
    ("aten::mul", "aten::dropout", "dropout", "dropout"),
    # the attention scope (under scaled_dot_product_attention) takes its math path's ops
    ("aten::bmm", "aten::matmul", "attention", "attention"),
    ("aten::_softmax", "aten::softmax", "attention", "attention"),
    ("aten::add", "", "", "other"),
])
def test_classify_op(name, parent, scope, expected):
    assert classify_op(name, parent, scope) == expected
    assert expected in CLASSES


def test_aggregate_follows_scopes_into_backward():
    """A backward op takes the scope of the forward op that made its node; the classes add
    up to the total self time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        h = lin(x)
        with record_function(SCOPE_PREFIX + "loss"):
            y = torch.log_softmax(h, -1).sum()
        y.backward()
    events = list(prof.events())
    per_class, by_op = aggregate(events)
    assert set(per_class) == set(CLASSES)
    assert sum(per_class.values()) == pytest.approx(
        sum(e.self_cpu_time_total for e in events))
    ops = {name: cls for cls, name in by_op}
    assert ops["aten::_log_softmax"] == "relation KL / loss"
    assert ops["aten::_log_softmax_backward_data"] == "relation KL / loss"  # via its node
    assert ops["aten::addmm"] == "GEMM"
    assert ops["aten::mm"] == "GEMM"  # AddmmBackward0 outside the scope


def test_aggregate_puts_attention_and_its_dropout_in_their_scopes():
    """Training on the CPU takes the math path of SDPA (attention dropout): its products and
    softmax are attention, forward and backward; its dropout is dropout."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(2, 2, 5, 4, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
        out.sum().backward()
    _, by_op = aggregate(list(prof.events()))
    classes = {}
    for cls, name in by_op:
        classes.setdefault(name, set()).add(cls)
    assert classes["aten::bernoulli_"] == {"dropout"}
    for name in ("aten::bmm", "aten::_softmax", "aten::_softmax_backward_data"):
        if name in classes:
            assert classes[name] == {"attention"}, name
    assert "GEMM" not in {c for cls in classes.values() for c in cls}


def test_criterion_scopes_are_restored():
    from fairseq_crild.criterions import consistency
    from fairseq_crild.criterions.ild_distance import IldDistance
    from fairseq_crild.models.requests import MixupSpec

    before = (IldDistance.__call__, consistency.consistency_term, MixupSpec.apply,
              consistency.draw_mixup)
    with criterion_scopes():
        assert IldDistance.__call__ is not before[0]
        assert consistency.consistency_term is not before[1]
    assert (IldDistance.__call__, consistency.consistency_term, MixupSpec.apply,
            consistency.draw_mixup) == before


def test_format_profile_lists_every_class():
    classes = {c: {"ms_per_step": 1.0, "share": 1 / len(CLASSES)} for c in CLASSES}
    text = format_profile({"cr_ild_step": {"precision": "bf16", "steps": 2, "classes": classes,
                                           "total_ms_per_step": float(len(CLASSES))}})
    assert all(f"| {c} |" in text for c in CLASSES) and "| total |" in text


def test_profile_option_end_to_end(tiny_env, tmp_path, capsys):
    """--profile on the tiny fixture: the table and the JSON per precision, shares summing
    to 1 (the benchmark's own step and batches; the timings themselves are not checked)."""
    import json

    from scripts.benchmark import main

    out = tmp_path / "profile.json"
    threads = torch.get_num_threads()
    try:
        code = main(["--glue-dir", str(tiny_env["glue"]), "--task", "RTE", "--base",
                     str(tiny_env["ckpt"]), "--student-layers", "2", "--batch-size", "8",
                     "--steps", "2", "--warmup", "1", "--threads", "1",
                     "--precisions", "fp32,bf16", "--profile",
                     "cr_ild_step,cr_ild_unshared_step",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    text = capsys.readouterr().out
    assert "| relation KL / loss |" in text and "cr_ild_unshared_step bf16 ms/step" in text
    profile = json.loads(out.read_text())["profile"]
    assert list(profile) == ["cr_ild_step@fp32", "cr_ild_unshared_step@fp32",
                             "cr_ild_step@bf16", "cr_ild_unshared_step@bf16"]
    for row in profile.values():
        assert sum(c["share"] for c in row["classes"].values()) == pytest.approx(1.0)
        # one student's update each: the other variant's gradients were cleared
        assert row["optimizer_params"] == profile["cr_ild_step@fp32"]["optimizer_params"]
        assert row["classes"]["relation KL / loss"]["ms_per_step"] > 0
        assert row["classes"]["optimizer"]["ms_per_step"] > 0


def test_relation_memo_ab_variant(tiny_env, tmp_path):
    """--variants cr_ild_step,cr_ild_unshared_step: the memo's A/B, interleaved, with its
    same-round ratio (fake clock: the bookkeeping, not the speed)."""
    import json

    from scripts.benchmark import VARIANTS, main
    from tests.test_benchmark import CountingTimer

    assert "cr_ild_unshared_step" not in VARIANTS  # not in the default run
    out = tmp_path / "ab.json"
    threads = torch.get_num_threads()
    try:
        code = main(["--glue-dir", str(tiny_env["glue"]), "--task", "RTE", "--base",
                     str(tiny_env["ckpt"]), "--student-layers", "2", "--batch-size", "8",
                     "--steps", "2", "--warmup", "0", "--repeats", "1", "--interleave", "2",
                     "--threads", "1", "--gemm-size", "0", "--epoch-tasks", "",
                     "--no-memory", "--variants", "cr_ild_step,cr_ild_unshared_step",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out)],
                    timer=CountingTimer())
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(out.read_text())
    assert list(result["variants"]) == ["cr_ild_step", "cr_ild_unshared_step"]
    # per round: unshared seconds / shared seconds (same batches, so same examples)
    rounds = result["rounds"]
    expected = sorted(r["pass_s"]["cr_ild_unshared_step"][0] / r["pass_s"]["cr_ild_step"][0]
                      for r in rounds)
    assert result["ratios"]["speedup_relation_memo"] == pytest.approx(
        sum(expected) / 2, abs=1e-3)
