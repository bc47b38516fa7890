#!/usr/bin/env python
"""Stage-1 CR-ILD epoch time per training batch layout (fresh pairs, length buckets, pad-128).

    python scripts/benchmark_epoch_layout.py --data data-bin/RTE --base ckpt/minilm \\
        [--teacher T.pt] [--student-layers 3] [--batch-size 32] [--steps 12] [--rounds 3]
        [--threads 2] [--json FILE]

Layouts, all through the real ``distill_glue`` task and ``cr_ild`` criterion (preset
``cr_ild``, built by fairseq's own option parser): ``length-buckets`` (fairseq's batches,
built once, padded to the longest example of each), ``fresh-pairs`` (``--train-batches
fresh-pairs``: new random mixup partners every epoch, pairs sorted by their longer member,
padded to the longest pair) and ``pad-128`` (fresh random batches padded to ``--pad-length``
tokens, as the authors' scripts run).

For each layout the epoch's batch list is built as ``fairseq-train`` builds it (epoch 1,
``--seed 1``), and every batch's padded length is read off it: mean padded length per
batch and share of padded positions are over the whole epoch. The timed batches are
``--steps`` batches, one from each of ``--steps`` equal strata of the epoch's batches sorted
by width (``--steps 0``: the whole epoch); a step is ``task.train_step`` (criterion forward
and backward, no optimizer update), after one untimed step per layout. The
layouts are timed interleaved, ``--rounds`` times (median per layout), so a slow moment of a
shared machine hits all of them; the epoch time is the mean step time of the sample times
the epoch's batch count. ``--teacher`` may be omitted: the base with a random head is the
teacher then (timings do not depend on the weights; CR-ILD never reads the head).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import torch

from fairseq_crild.cli.benchmark import (
    _Backward,
    fairseq_cfg,
    student_arch_args,
    teacher_with_random_head,
)

logger = logging.getLogger("benchmark_epoch_layout")
LAYOUTS = ("length-buckets", "fresh-pairs", "pad-128")
CR_ILD = ["--criterion", "cr_ild", "--ild-preset", "cr_ild"]


def spread(batches: List[np.ndarray], sizes: np.ndarray, n: int) -> List[np.ndarray]:
    """A stratified sample: the middle batch of each of ``n`` equal strata of the epoch's
    batches sorted by width (all of them if n <= 0)."""
    ordered = sorted(batches, key=lambda b: (int(sizes[b].max()), len(b)))
    if n <= 0 or n >= len(ordered):
        return ordered
    picks = ((np.arange(n) + 0.5) * len(ordered) / n).astype(int)
    return [ordered[i] for i in picks]


def epoch_batches(task, layout: str, batch_size: int, pad_length: int) -> List[np.ndarray]:
    """The epoch-1 training batches of ``layout``, as fairseq-train's iterator forms them."""
    task.cfg.train_batches = "length-buckets" if layout == "length-buckets" else "fresh-pairs"
    task.pad_every_batch_to(pad_length if layout == "pad-128" else 0)
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=batch_size,
                                  max_positions=task.max_positions(), seed=1, epoch=1,
                                  required_batch_size_multiple=8, disable_iterator_cache=True)
    return [np.asarray(b) for b in itr.frozen_batches if len(b)]


def run(args) -> Dict[str, Any]:
    from fairseq import tasks

    from fairseq_crild.data.batching import padding_stats

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work_dir or tempfile.mkdtemp(prefix="epoch-layout-")
    os.makedirs(work, exist_ok=True)
    teacher = args.teacher or teacher_with_random_head(args.base, args.data, work)
    common = ["--task", "distill_glue", "--teacher-path", teacher, "--init-student-from",
              os.path.join(args.base, "model.pt"), "--max-positions", str(args.max_positions),
              "--batch-size", str(args.batch_size), "--seed", "1", "--max-epoch", "20",
              "--optimizer", "adam", "--lr", "1e-4", "--num-workers", "0", "--cpu",
              *student_arch_args(args.base, args.student_layers)]
    cfg = fairseq_cfg(args.data, common + CR_ILD)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    sizes = np.asarray(task.dataset("train").sizes)
    ds = task.dataset("train")

    plans: Dict[str, Dict[str, Any]] = {}
    for layout in LAYOUTS:
        batches = epoch_batches(task, layout, args.batch_size, args.pad_length)
        pad = args.pad_length if layout == "pad-128" else 0
        mean_len, share = padding_stats(batches, sizes, pad)
        picked = spread(batches, sizes, args.steps)
        samples = [ds.collater([ds[int(i)] for i in b]) for b in picked]  # padded as set now
        plans[layout] = {"samples": samples, "epoch_batches": len(batches),
                         "mean_padded_length": round(mean_len, 2),
                         "padding_share": round(share, 4), "times": []}
    task.pad_every_batch_to(0)
    params = [p for p in list(model.parameters()) + list(criterion.parameters())
              if p.requires_grad]

    def step(sample) -> None:
        for p in params:
            p.grad = None
        task.train_step(sample, model, criterion, _Backward(), update_num=0)

    model.train()
    for plan in plans.values():  # warm-up per layout (allocator, first-call costs per shape)
        step(plan["samples"][0])
    for r in range(args.rounds):
        for layout in LAYOUTS:
            samples = plans[layout]["samples"]
            start = time.perf_counter()
            for sample in samples:
                step(sample)
            plans[layout]["times"].append(time.perf_counter() - start)
            logger.info(f"round {r + 1}: {layout} {plans[layout]['times'][-1]:.2f} s")

    out: Dict[str, Any] = {"data": args.data, "batch_size": args.batch_size,
                           "threads": torch.get_num_threads(), "rounds": args.rounds,
                           "layouts": {}}
    for layout, plan in plans.items():
        median = statistics.median(plan["times"])
        examples = sum(int(s["nsentences"]) for s in plan["samples"])
        per_step = median / len(plan["samples"])
        out["layouts"][layout] = {
            "epoch_batches": plan["epoch_batches"], "timed_batches": len(plan["samples"]),
            "mean_padded_length": plan["mean_padded_length"],
            "padding_share": plan["padding_share"], "examples_per_s": examples / median,
            "ms_per_step": 1000 * per_step, "epoch_s": per_step * plan["epoch_batches"],
            "pass_s": plan["times"]}
    ref = out["layouts"]["length-buckets"]["epoch_s"]
    for layout in LAYOUTS:
        out["layouts"][layout]["epoch_s_vs_length_buckets"] = (
            out["layouts"][layout]["epoch_s"] / ref)
    return out


def format_table(result: Dict[str, Any]) -> str:
    lines = [f"{result['data']}: batch {result['batch_size']}, {result['threads']} thread(s), "
             f"median of {result['rounds']} interleaved round(s)",
             f"{'layout':<15}{'batches':>8}{'mean len':>9}{'pad %':>7}{'ms/step':>9}"
             f"{'ex/s':>8}{'epoch s':>9}{'ratio':>7}"]
    for name, v in result["layouts"].items():
        lines.append(f"{name:<15}{v['epoch_batches']:>8}{v['mean_padded_length']:>9.1f}"
                     f"{100 * v['padding_share']:>7.1f}{v['ms_per_step']:>9.1f}"
                     f"{v['examples_per_s']:>8.1f}{v['epoch_s']:>9.1f}"
                     f"{v['epoch_s_vs_length_buckets']:>7.2f}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="binarised folder (scripts/prepare_glue.py)")
    p.add_argument("--base", required=True, help="converted BERT folder (model.pt, dict.txt) "
                   "the data was binarised with; its first layers initialise the student")
    p.add_argument("--teacher", default="", help="teacher checkpoint (default: --base with a "
                   "random head)")
    p.add_argument("--student-layers", type=int, default=3, help="student layers (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="stage-1 batch (default 32)")
    p.add_argument("--max-positions", type=int, default=128, help="default 128")
    p.add_argument("--pad-length", type=int, default=128, help="length of the padded "
                   "layout (default 128, the authors')")
    p.add_argument("--steps", type=int, default=12, help="timed batches per layout, spread "
                   "over the epoch's widths (0 = the whole epoch; default 12)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median; "
                   "default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--work-dir", default="", help="scratch folder (default: a temporary one)")
    p.add_argument("--json", default="", help="write the results here as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("fairseq", "fairseq_crild"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    result = run(args)
    print(format_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
