"""scripts/benchmark.py end to end on the tiny fixture. Every pass really runs, but the clock
is a fake one (scripted seconds), so the reported medians, ratios and peak shares are checked
against plain Python on those seconds, never against real timings."""

import itertools
import json
import os
import shutil
import statistics

import pytest
import torch

from scripts.benchmark import VARIANTS, main


class CountingTimer:
    """Runs the pass, then answers 1, 2, 3, ... seconds (distinct values, known order)."""

    def __init__(self):
        self.count = itertools.count(1)

    def __call__(self, run):
        run()
        return float(next(self.count))


def _run(tiny_env, tmp_path, *extra, timer=None):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:  # one thread: several threads on a shared CPU spin far longer than they compute
        code = main(["--glue-dir", str(tiny_env["glue"]), "--task", "RTE", "--base",
                     str(tiny_env["ckpt"]), "--student-layers", "2", "--batch-size", "8",
                     "--steps", "2", "--warmup", "0", "--repeats", "1", "--epoch-tasks", "RTE",
                     "--epoch-batches", "2", "--epoch-repeats", "1", "--threads", "1",
                     "--gemm-size", "16", "--gemm-repeats", "2",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out), *extra],
                    timer=timer)
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return json.loads(out.read_text())


def test_benchmark_interleaves_both_precisions_on_real_batches(tiny_env, tmp_path):
    """Every variant at fp32 and bf16 in two rounds, on the fake clock."""
    result = _run(tiny_env, tmp_path, "--interleave", "2", "--precisions", "fp32,bf16",
                  "--no-memory", timer=CountingTimer())
    labels = [f"{v}@{p}" for p in ("fp32", "bf16") for v in VARIANTS]
    v = result["variants"]
    assert list(v) == labels
    assert result["config"]["interleave"] == 2 and result["reference"] == (
        "cr_ild_pad128_step@fp32")

    # every raw round: the variants then one GEMM per precision, round-robin
    rounds = result["rounds"]
    order = labels + ["gemm_fp32", "gemm_bf16"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["order"] == order and list(r["pass_s"]) == order for r in rounds)
    # the fake clock ticks once per pass, in execution order
    assert [r["pass_s"][k] for r in rounds for k in order] == [
        [float(i)] for i in range(1, 2 * len(order) + 1)]

    for key, row in v.items():
        secs = [r["pass_s"][key][0] for r in rounds]
        assert row["round_s"] == secs
        assert row["ms_per_step"] == pytest.approx(1000 * statistics.median(secs) / 2)
        assert row["examples_per_s"] == pytest.approx(
            statistics.median([row["examples"] / s for s in secs]))
        if row["name"] == "adam_update":
            assert "useful_flops" not in row and "vs_reference" not in row
            continue
        if row["name"] == "encoder_gemms":  # a matmul pass, not a step: no reference ratio
            assert "vs_reference" not in row
        else:
            ref = result["reference"]
            ref_secs = [r["pass_s"][ref][0] for r in rounds]
            ref_ex = v[ref]["examples"]
            assert row["vs_reference"]["median"] == pytest.approx(statistics.median(
                [(row["examples"] / s) / (ref_ex / t) for s, t in zip(secs, ref_secs)]))
        g = result["peak"][row["precision"]]
        g_secs = [r["pass_s"][f"gemm_{row['precision']}"][0] for r in rounds]
        assert g["flops_per_round"] == 2 * 2 * 16 ** 3
        share = [(row["useful_flops"] / s) / (g["flops_per_round"] / t)
                 for s, t in zip(secs, g_secs)]
        assert row["useful_share_of_peak"]["median"] == pytest.approx(statistics.median(share))
        assert 0 < row["useful_flops"] <= row["executed_flops"]

    # the padded variant really runs the task's --pad-to-length batches, on the same examples
    pad, dyn = v["cr_ild_pad128_step@fp32"], v["cr_ild_step@fp32"]
    assert pad["padded_tokens"] == pad["examples"] * 128
    assert dyn["examples"] == pad["examples"] and dyn["padded_tokens"] < pad["padded_tokens"]
    assert dyn["useful_flops"] == pad["useful_flops"] < pad["executed_flops"]
    # the matmuls alone count as the teacher forward on the same batches
    gemms, teacher = v["encoder_gemms@bf16"], v["teacher_fwd@bf16"]
    assert gemms["executed_flops"] == teacher["executed_flops"]
    assert gemms["examples"] == teacher["examples"]
    assert v["cr_ild_fresh_step@fp32"]["examples"] > 0

    # same-round ratio: the median over rounds of per-example cost ratios
    def secs_of(key):
        return [r["pass_s"][key][0] / v[key]["examples"] for r in rounds]
    want = statistics.median([a / (b + c) for a, b, c in zip(
        secs_of("kd_step@bf16"), secs_of("teacher_fwd@bf16"), secs_of("student_fwd_bwd@bf16"))])
    assert result["ratios"]["kd_vs_passes@bf16"] == round(want, 3)
    assert {"cr_ild_vs_passes@fp32", "clean_pass_cost@bf16", "kd_cached_vs_finetune@fp32",
            "fresh_vs_buckets@fp32", "cr_ild_step_speedup_bf16_over_fp32",
            "teacher_fwd_vs_encoder_gemms@bf16"} <= set(
                result["ratios"])
    assert result["ratio_stats"]["kd_vs_passes@bf16"]["n"] == 2

    assert "peak_mem_mb" not in v["teacher_fwd@bf16"]  # --no-memory
    assert os.path.isfile(result["cache_file_fp32"])
    assert result["cache_file_fp32"].startswith(str(tmp_path / "work"))
    epoch = result["epochs"]["RTE"]
    assert epoch["dynamic@fp32_epoch_batches"] == 6 and epoch["dynamic@bf16_sampled_batches"] == 2
    assert {"fresh@bf16_epoch_s_est", "pad128@fp32_epoch_s_est",
            "speedup_fresh_over_pad128@bf16"} <= set(epoch)
    assert result["environment"]["precisions"] == ["fp32", "bf16"]


def _with_wnli(tiny_env, tmp_path) -> str:
    """A GLUE folder with the tiny RTE slice and a WNLI copy of it (labels 1 / 0), so the
    epoch estimate has a second task that is not the main table's."""
    glue = tmp_path / "glue"
    shutil.copytree(tiny_env["glue"] / "RTE", glue / "RTE")
    (glue / "WNLI").mkdir()
    for split in ("train", "dev", "test"):
        text = (glue / "RTE" / f"{split}.tsv").read_text(encoding="utf-8")
        text = text.replace("\tnot_entailment\n", "\t0\n").replace("\tentailment\n", "\t1\n")
        (glue / "WNLI" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return str(glue)


def test_benchmark_single_precision_on_the_real_clock(tiny_env, tmp_path):
    """The wall clock and the GEMM peak really run (their values are not checked); the epoch
    estimate covers a second task (it once overwrote its work folder after the first)."""
    result = _run(tiny_env, tmp_path, "--variants", "finetune_step,kd_cached_step",
                  "--reference", "finetune_step", "--glue-dir", _with_wnli(tiny_env, tmp_path),
                  "--epoch-tasks", "RTE,WNLI")
    assert set(result["epochs"]) == {"RTE", "WNLI"}
    assert result["epochs"]["WNLI"]["examples"] == result["epochs"]["RTE"]["examples"]
    assert list(result["variants"]) == ["finetune_step", "kd_cached_step"]
    row = result["variants"]["finetune_step"]
    assert row["vs_reference"]["median"] == 1.0 and row["useful_share_of_peak"]["n"] == 1
    assert result["peak"]["fp32"]["gflops_per_s"]["median"] > 0
    assert set(result["ratios"]) == {"kd_cached_vs_finetune"}
    assert all("peak_mem_mb" in row for row in result["variants"].values())


def test_hash_dropout_variants_and_epoch_estimate(tiny_env, tmp_path):
    """The --dropout-impl hash variants run real steps next to their torch twins (their
    same-round speedups reported), and the epoch estimate can use the hash masks."""
    result = _run(tiny_env, tmp_path, "--variants",
                  "finetune_step,finetune_hash_dropout_step,cr_ild_step,cr_ild_hash_dropout_step",
                  "--reference", "finetune_step", "--no-memory", "--epoch-dropout-impl", "hash",
                  timer=CountingTimer())
    assert list(result["variants"]) == ["finetune_step", "cr_ild_step",
                                        "finetune_hash_dropout_step", "cr_ild_hash_dropout_step"]
    assert {"speedup_hash_dropout_finetune", "speedup_hash_dropout_cr_ild"} <= set(
        result["ratios"])
    assert result["config"]["epoch_dropout_impl"] == "hash"
    assert result["epochs"]["RTE"]["dynamic_epoch_batches"] > 0


def test_relation_kernel_variants(tiny_env, tmp_path):
    """The --relation-kl-impl cpp variants run real steps (buckets and fresh pairs) next to
    the torch step, with their same-round ratios."""
    result = _run(tiny_env, tmp_path, "--variants",
                  "cr_ild_step,cr_ild_pad128_step,cr_ild_cpp_kl_step,"
                  "cr_ild_cpp_kl_hash_dropout_step,cr_ild_fresh_cpp_kl_hash_dropout_step",
                  "--no-memory", timer=CountingTimer())
    assert {"cr_ild_cpp_kl_step", "cr_ild_cpp_kl_hash_dropout_step",
            "cr_ild_fresh_cpp_kl_hash_dropout_step"} <= set(result["variants"])
    assert {"speedup_relation_kernel", "speedup_cpp_kl_hash_dropout_over_pad128",
            "speedup_fresh_cpp_kl_hash_dropout_over_pad128"} <= set(result["ratios"])
