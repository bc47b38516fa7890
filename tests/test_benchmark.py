"""scripts/benchmark.py end to end on the tiny fixture (values are timings: only their shape
and the set-up behind them are checked, never their size)."""

import json
import os

import torch

from scripts.benchmark import VARIANTS, main


def test_benchmark_measures_every_variant_on_real_batches(tiny_env, tmp_path):
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    threads = torch.get_num_threads()
    try:  # one thread: several threads on a shared CPU spin far longer than they compute
        code = main(["--glue-dir", str(tiny_env["glue"]), "--task", "RTE", "--base",
                     str(tiny_env["ckpt"]), "--student-layers", "2", "--batch-size", "8",
                     "--steps", "2", "--warmup", "0", "--repeats", "1", "--epoch-tasks", "RTE",
                     "--epoch-batches", "2", "--threads", "1", "--work-dir", str(work),
                     "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["variants"]) == set(VARIANTS)
    for name, v in result["variants"].items():
        assert v["ms_per_step"] > 0 and "peak_mem_mb" in v, name
    v = result["variants"]
    # the padded variant really runs the task's --pad-to-length batches, on the same examples
    assert v["cr_ild_pad128_step"]["padded_tokens"] == v["cr_ild_pad128_step"]["examples"] * 128
    assert v["cr_ild_step"]["examples"] == v["cr_ild_pad128_step"]["examples"]
    assert v["cr_ild_step"]["padded_tokens"] < v["cr_ild_pad128_step"]["padded_tokens"]
    assert {"cr_ild_vs_passes", "kd_cached_vs_finetune", "dynamic_vs_pad128"} <= set(
        result["ratios"])
    assert all(r > 0 for r in result["ratios"].values())
    assert os.path.isfile(result["cache_file"]) and result["cache_file"].startswith(str(work))
    epoch = result["epochs"]["RTE"]
    assert epoch["epoch_batches"] == 6 and epoch["sampled_batches"] == 2  # 48 rows / 8
    assert result["environment"]["torch_version"] and result["environment"]["threads"] >= 1
