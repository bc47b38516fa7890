"""Speed and memory of the distillation steps on real GLUE batches, in one process.

``crild-benchmark`` is the installed command; ``python scripts/benchmark.py`` runs the same
``main`` from a source checkout.

    crild-benchmark --glue-dir GLUE --task RTE --threads 2 [--json FILE]
        [--teacher CKPT] [--base DIR] [--student-layers 3] [--batch-size 32]
        [--steps 6 --warmup 1 --repeats 3] [--epoch-tasks RTE,CoLA --epoch-batches 6
        --epoch-repeats 2] [--variants a,b] [--device cpu|cuda] [--fp16 | --bf16] [--work-dir DIR]

What it builds: the converted all-MiniLM-L6-v2 (``--base``, default: converted into the work
folder) gives the dictionary and the student's initial layers (its first
``--student-layers``); the teacher is ``--teacher`` (e.g. a fine-tuned
runs/teachers/RTE-lr2e-5/checkpoint_best.pt) or, without one, the base with a random head
(timings do not depend on the weights). The task's training split is binarised into the work
folder and batched exactly as ``fairseq-train`` batches it (``distill_glue``: length-sorted
buckets of ``--batch-size`` sentences); the timed batches are ``--steps`` batches spread
evenly over that length order, so their length mix is the epoch's. Every training variant
runs the real task and criterion objects, built by fairseq's own option parser
(``task.train_step``: criterion forward + backward).

Variants (median over ``--repeats`` timed passes over the batches, after ``--warmup``
untimed steps): teacher forward; student forward+backward (head logits, sum backward);
student clean forward (no grad, as the consistency term's); fine-tune step (glue_ce); KD step
(live teacher); KD step with cached teacher logits (--teacher-logit-cache; the one-off cache
build is timed separately); CR-ILD stage-1 step (preset cr_ild: Q/K/V relations of the last
layer + mixup; its consistency acts on attention/hidden only, so it makes no clean pass);
CR-ILD step with --consistency-on-relations (makes the clean pass); the CR-ILD step on the
same batches padded to ``--pad-length`` (``--pad-to-length``, as the paper's code pads); one
Adam update of the student (not part of the steps above). Tokens/s counts real (unpadded)
tokens for every variant, so padded variants show useful throughput.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation before the
variant; on the CPU, the peak resident set size above the value before the variant, sampled
every millisecond by a thread during a separate untimed pass (after ``malloc_trim`` returns
freed heap to the OS; ``getrusage`` maxrss cannot be reset, so only the first variant could
be read from it). Both exclude the model weights already loaded.

Epochs: for each of ``--epoch-tasks``, the CR-ILD step is timed on ``--epoch-batches``
batches spread evenly over the epoch's length order (a fixed, stratified sample, not the
full epoch), dynamic and padded to ``--pad-length`` (median of ``--epoch-repeats`` passes),
and scaled to the epoch's batch count. Tasks other than ``--task`` use the base with a
random head as teacher (CR-ILD never reads the head).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

# the plugin folder itself (a source checkout's or the installed package's)
USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = "glue"
logger = logging.getLogger("benchmark")


# --------------------------------------------------------------------------- measurement


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats, or sampled CPU RSS."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()
            self.base = self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def above_base_mb(self) -> float:
        return (self.peak - self.base) / 2**20

    @property
    def total_mb(self) -> float:
        return self.peak / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step: Callable[[Dict[str, Any]], Any], batches: List[Dict[str, Any]],
            device: torch.device, warmup: int, repeats: int, memory: bool = True
            ) -> Dict[str, Any]:
    """Median wall time of ``repeats`` passes over ``batches`` after ``warmup`` steps."""
    for i in range(warmup):
        step(batches[i % len(batches)])
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    examples = sum(int(b["nsentences"]) for b in batches)
    tokens = sum(int(b["ntokens"]) for b in batches)
    out = {
        "ms_per_step": 1000 * median / len(batches), "examples_per_s": examples / median,
        "tokens_per_s": tokens / median, "pass_s": times, "median_pass_s": median,
        "batches": len(batches), "examples": examples, "tokens": tokens,
        "padded_tokens": sum(int(b["net_input"]["src_tokens"].numel()) for b in batches),
    }
    if memory:
        with PeakMemory(device) as mem:
            for batch in batches:
                step(batch)
        out["peak_mem_mb"] = round(mem.above_base_mb, 1)
        out["peak_total_mb"] = round(mem.total_mb, 1)
    return out


# --------------------------------------------------------------------------- set-up


def prepare_base(base: str, work: str) -> str:
    """A converted BERT folder (model.pt + dict.txt): ``base`` or all-MiniLM-L6-v2."""
    if base:
        return base
    out = os.path.join(work, "minilm")
    if not os.path.isfile(os.path.join(out, "model.pt")):
        from fairseq_crild.cli.convert import main as convert

        if convert(["minilm", out]) != 0:
            raise SystemExit("benchmark: converting all-MiniLM-L6-v2 failed")
    return out


def prepare_data(glue_dir: str, task: str, base: str, work: str) -> str:
    from fairseq_crild.data.binarize import prepare_task

    out = os.path.join(work, "data", task)
    if not os.path.isfile(os.path.join(out, "meta.json")):
        prepare_task(glue_dir, task, os.path.join(base, "dict.txt"), out)
    return out


def teacher_with_random_head(base: str, data: str, work: str) -> str:
    """The base model plus a seeded random head sized for ``data``'s labels."""
    from fairseq_crild.tasks.distill_glue import read_meta

    meta = read_meta(data)
    classes = meta.num_outputs
    path = os.path.join(work, f"teacher-random-head-{classes}.pt")
    if not os.path.isfile(path):
        from omegaconf import OmegaConf

        from fairseq_crild.models.loading import read_checkpoint

        state = read_checkpoint(os.path.join(base, "model.pt"))  # safe reading
        if OmegaConf.is_config(state.get("cfg")):  # saved plain, as fairseq saves it
            state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True)
        dim = state["model"]["pooler.weight"].shape[0]
        gen = torch.Generator().manual_seed(0)
        state["model"][f"classification_heads.{HEAD}.out_proj.weight"] = (
            torch.randn(classes, dim, generator=gen) * 0.02)
        state["model"][f"classification_heads.{HEAD}.out_proj.bias"] = torch.zeros(classes)
        torch.save(state, path)
    return path


def student_arch_args(base: str, layers: int) -> List[str]:
    """The base's shape with ``layers`` layers (its first layers initialise the student)."""
    from fairseq_crild.models.loading import bert_config_from_checkpoint, read_checkpoint

    cfg = bert_config_from_checkpoint(read_checkpoint(os.path.join(base, "model.pt")))
    return ["--arch", "bert", "--encoder-layers", str(layers),
            "--encoder-embed-dim", str(cfg.encoder_embed_dim),
            "--encoder-attention-heads", str(cfg.encoder_attention_heads),
            "--encoder-ffn-embed-dim", str(cfg.encoder_ffn_embed_dim),
            "--max-position-embeddings", str(cfg.max_position_embeddings)]


def fairseq_cfg(data: str, argv: List[str]):
    """The configuration ``fairseq-train DATA argv`` would run with."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(),
                                       input_args=[data, "--user-dir", USER_DIR, *argv])
    return convert_namespace_to_omegaconf(args)


class _Backward:
    """What ``task.train_step`` needs of an optimizer: ``backward(loss)``."""

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()


@dataclass
class Trainee:
    """One student with its criterion, built as fairseq-train builds them."""

    name: str
    model: torch.nn.Module
    criterion: torch.nn.Module
    cfg: Any


class Bench:
    """The task, its batches and one student per criterion for one GLUE task."""

    def __init__(self, args, data: str, teacher: str, base: str):
        from fairseq import tasks

        self.args = args
        self.device = torch.device(args.device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision,
                                                                            torch.float32)
        self.common = [
            "--task", "distill_glue", "--teacher-path", teacher, "--init-student-from",
            os.path.join(base, "model.pt"), "--max-positions", str(args.max_positions),
            "--batch-size", str(args.batch_size), "--seed", "1", "--max-epoch", "20",
            "--optimizer", "adam", "--lr", "1e-4", "--num-workers", "0",
            *(["--cpu"] if self.device.type == "cpu" else []),
            *student_arch_args(base, args.student_layers)]
        cfg = fairseq_cfg(data, self.common + ["--criterion", "glue_ce"])
        self.task = tasks.setup_task(cfg.task)
        self.task.load_dataset("train")
        padded_cfg = fairseq_cfg(data, self.common + ["--criterion", "glue_ce",
                                                      "--pad-to-length", str(args.pad_length)])
        self.padded_task = tasks.setup_task(padded_cfg.task)  # only collates: no teacher
        self.padded_task.load_dataset("train")
        self.trainees: Dict[str, Trainee] = {}

    # ------------------------------------------------------------------ batches
    def epoch_batches(self) -> List[np.ndarray]:
        """The training epoch's batches as fairseq-train forms them, in length order."""
        itr = self.task.get_batch_iterator(
            dataset=self.task.dataset("train"), max_sentences=self.args.batch_size,
            max_positions=self.task.max_positions(), ignore_invalid_inputs=True, seed=1)
        sizes = self.task.dataset("train").sizes
        return sorted(itr.frozen_batches, key=lambda b: (float(np.mean(sizes[b])), len(b)))

    @staticmethod
    def spread(batches: List[np.ndarray], n: int) -> List[np.ndarray]:
        """``n`` batches evenly spaced over the length order (all of them if fewer)."""
        if n >= len(batches):
            return list(batches)
        picks = np.linspace(0, len(batches) - 1, n).round().astype(int)
        return [batches[i] for i in picks]

    def collate(self, index_batches: List[np.ndarray], padded: bool = False):
        task = self.padded_task if padded else self.task
        ds = task.dataset("train")
        out = []
        for b in index_batches:
            sample = ds.collater([ds[int(i)] for i in b])
            if self.device.type == "cuda":
                from fairseq import utils

                sample = utils.move_to_cuda(sample)
            out.append(sample)
        return out

    # ------------------------------------------------------------------ students
    def trainee(self, name: str, criterion_argv: List[str]) -> Trainee:
        if name not in self.trainees:
            cfg = fairseq_cfg(self.task.cfg.data, self.common + criterion_argv)
            model = self.task.build_model(cfg.model)
            criterion = self.task.build_criterion(cfg.criterion)
            if self.dtype != torch.float32:  # as fairseq's trainer: model and criterion cast
                model, criterion = model.to(dtype=self.dtype), criterion.to(dtype=self.dtype)
            model, criterion = model.to(self.device), criterion.to(self.device)
            self.trainees[name] = Trainee(name, model, criterion, cfg)
        return self.trainees[name]

    def train_step(self, trainee: Trainee) -> Callable[[Dict[str, Any]], Any]:
        params = [p for p in list(trainee.model.parameters())
                  + list(trainee.criterion.parameters()) if p.requires_grad]

        def step(sample):
            for p in params:
                p.grad = None
            return self.task.train_step(sample, trainee.model, trainee.criterion, _Backward(),
                                        update_num=0)
        return step

    def teacher_forward(self) -> Callable[[Dict[str, Any]], Any]:
        teacher = self.task.teacher
        teacher.follow(self.device, self.dtype)
        return lambda sample: teacher(sample["net_input"], HEAD)

    def student_forward_backward(self, trainee: Trainee) -> Callable[[Dict[str, Any]], Any]:
        model = trainee.model.train()
        params = [p for p in model.parameters() if p.requires_grad]

        def step(sample):
            for p in params:
                p.grad = None
            logits, _ = model(**sample["net_input"], classification_head_name=HEAD)
            logits.float().sum().backward()
        return step

    def student_clean_forward(self, trainee: Trainee) -> Callable[[Dict[str, Any]], Any]:
        from fairseq_crild.models.requests import FeatureRequest

        model = trainee.model.train()
        request = FeatureRequest(qkv=frozenset({model.num_layers - 1}))

        def step(sample):
            with torch.no_grad():
                model(**sample["net_input"], request=request)
        return step

    def adam_update(self, trainee: Trainee, sample) -> Callable[[Dict[str, Any]], Any]:
        from fairseq import optim

        params = [p for p in trainee.model.parameters() if p.requires_grad]
        optimizer = optim.build_optimizer(trainee.cfg.optimizer, params)
        self.student_forward_backward(trainee)(sample)
        return lambda _sample: optimizer.step()


CR_ILD = ["--criterion", "cr_ild", "--ild-preset", "cr_ild"]
VARIANTS = ("teacher_fwd", "student_fwd_bwd", "student_clean_fwd", "finetune_step",
            "kd_step", "kd_cached_step", "cr_ild_step", "cr_ild_cons_step",
            "cr_ild_pad128_step", "adam_update")


def run_main_table(bench: Bench, args, work: str) -> Dict[str, Any]:
    all_batches = bench.epoch_batches()
    picked = bench.spread(all_batches, args.steps)
    batches = bench.collate(picked)
    padded = bench.collate(picked, padded=True)
    wanted = [v for v in VARIANTS if not args.variants or v in args.variants]
    results: Dict[str, Any] = {}
    extra: Dict[str, Any] = {"epoch_batches": len(all_batches), "timed_batches": len(picked)}

    ft = bench.trainee("finetune", ["--criterion", "glue_ce"])
    cache_dir = os.path.join(work, "teacher_logits")
    steps: Dict[str, Callable[[], Callable]] = {
        "teacher_fwd": bench.teacher_forward,
        "student_fwd_bwd": lambda: bench.student_forward_backward(ft),
        "student_clean_fwd": lambda: bench.student_clean_forward(ft),
        "finetune_step": lambda: bench.train_step(ft),
        "kd_step": lambda: bench.train_step(bench.trainee("kd", ["--criterion", "kd"])),
        "kd_cached_step": lambda: bench.train_step(kd_cached()),
        "cr_ild_step": lambda: bench.train_step(bench.trainee("cr_ild", CR_ILD)),
        "cr_ild_cons_step": lambda: bench.train_step(bench.trainee(
            "cr_ild_cons", CR_ILD + ["--consistency-on-relations"])),
        "cr_ild_pad128_step": lambda: bench.train_step(bench.trainee("cr_ild", CR_ILD)),
        "adam_update": lambda: bench.adam_update(ft, batches[0]),
    }

    def kd_cached() -> Trainee:
        trainee = bench.trainee("kd_cached", ["--criterion", "kd", "--teacher-logit-cache",
                                              "--teacher-logit-cache-dir", cache_dir])
        if trainee.criterion._logit_cache is None:
            like = next(trainee.model.parameters())
            start = time.perf_counter()
            trainee.criterion.cached_teacher_logits(batches[0], like)
            extra["cache_build_s"] = round(time.perf_counter() - start, 2)
            extra["cache_file"] = trainee.criterion._logit_cache.path
        return trainee

    # epoch 11 of 20: the consistency weight has ramped up (0.1 * 10 / 20), so the
    # consistency variant makes its clean pass
    bench.task.begin_epoch(11, None)
    for name in wanted:
        step = steps[name]()
        data = padded if name == "cr_ild_pad128_step" else batches
        logger.info(f"timing {name} ...")
        results[name] = measure(step, data, bench.device, args.warmup, args.repeats)
        logger.info(f"  {results[name]['ms_per_step']:.1f} ms/step")
    return {"variants": results, **extra}


def ratios(v: Dict[str, Any]) -> Dict[str, float]:
    def ms(name: str) -> Optional[float]:
        return v[name]["ms_per_step"] if name in v else None

    out: Dict[str, float] = {}

    def put(key: str, num: Optional[float], *den: Optional[float]) -> None:
        if num is not None and all(d is not None for d in den):
            out[key] = round(num / sum(den), 3)

    put("cr_ild_vs_passes", ms("cr_ild_cons_step"), ms("teacher_fwd"), ms("student_fwd_bwd"),
        ms("student_clean_fwd"))
    put("cr_ild_preset_vs_passes", ms("cr_ild_step"), ms("teacher_fwd"), ms("student_fwd_bwd"))
    put("kd_vs_passes", ms("kd_step"), ms("teacher_fwd"), ms("student_fwd_bwd"))
    put("kd_cached_vs_finetune", ms("kd_cached_step"), ms("finetune_step"))
    put("finetune_vs_fwd_bwd", ms("finetune_step"), ms("student_fwd_bwd"))
    put("dynamic_vs_pad128", ms("cr_ild_step"), ms("cr_ild_pad128_step"))
    put("speedup_dynamic_over_pad128", ms("cr_ild_pad128_step"), ms("cr_ild_step"))
    return out


def run_epochs(args, base: str, work: str, main: Optional[Bench]) -> Dict[str, Any]:
    """Dynamic vs padded CR-ILD step over a stratified sample of each task's epoch."""
    out: Dict[str, Any] = {}
    for task in args.epoch_tasks:
        if main is not None and task == args.task:
            bench = main
        else:
            data = prepare_data(args.glue_dir, task, base, work)
            bench = Bench(args, data, teacher_with_random_head(base, data, work), base)
        all_batches = bench.epoch_batches()
        picked = bench.spread(all_batches, args.epoch_batches)
        trainee = bench.trainee("cr_ild", CR_ILD)
        step = bench.train_step(trainee)
        row: Dict[str, Any] = {"epoch_batches": len(all_batches), "sampled_batches": len(picked),
                               "examples": int(sum(len(b) for b in all_batches))}
        epoch_s = {}
        for kind, padded in (("dynamic", False), ("pad128", True)):
            logger.info(f"epoch estimate {task} {kind} ...")
            m = measure(step, bench.collate(picked, padded), bench.device, args.warmup,
                        args.epoch_repeats, memory=False)
            epoch_s[kind] = m["median_pass_s"] * len(all_batches) / len(picked)
            row[f"{kind}_epoch_s_est"] = round(epoch_s[kind], 1)
            row[f"{kind}_ms_per_step"] = round(m["ms_per_step"], 1)
        # from the unrounded estimates: a tiny model's epoch can round to 0.0 s
        row["speedup_dynamic_over_pad128"] = round(epoch_s["pad128"] / epoch_s["dynamic"], 2)
        sizes = bench.task.dataset("train").sizes
        row["mean_tokens_per_example"] = round(float(np.mean(sizes)), 1)
        out[task] = row
    return out


# --------------------------------------------------------------------------- output


def format_table(result: Dict[str, Any]) -> str:
    lines = ["| variant | ms/step | examples/s | tokens/s | peak MB (above start) |",
             "|---|---|---|---|---|"]
    for name, v in result["variants"].items():
        if name == "adam_update":
            lines.append(f"| {name} | {v['ms_per_step']:.1f} | - | - | "
                         f"{v.get('peak_mem_mb', float('nan')):.0f} |")
            continue
        lines.append(f"| {name} | {v['ms_per_step']:.1f} | {v['examples_per_s']:.1f} | "
                     f"{v['tokens_per_s']:.0f} | {v.get('peak_mem_mb', float('nan')):.0f} |")
    lines.append("")
    lines += [f"{k}: {v}" for k, v in result["ratios"].items()]
    if result.get("epochs"):
        lines += ["", "| epoch | batches (sampled) | dynamic s (est.) | pad-128 s (est.) | "
                  "speed-up |", "|---|---|---|---|---|"]
        for task, e in result["epochs"].items():
            lines.append(f"| {task} | {e['epoch_batches']} ({e['sampled_batches']}) | "
                         f"{e['dynamic_epoch_s_est']} | {e['pad128_epoch_s_est']} | "
                         f"{e['speedup_dynamic_over_pad128']}x |")
    return "\n".join(lines)


def environment(args) -> Dict[str, Any]:
    env = {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
           "torch_version": torch.__version__, "python": platform.python_version(),
           "device": args.device, "precision": args.precision, "machine": platform.machine()}
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    else:
        try:
            with open("/proc/cpuinfo") as f:
                env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f
                                   if ln.startswith("model name")), "")
        except OSError:
            pass
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", required=True, help="folder holding the GLUE task folders")
    p.add_argument("--task", default="RTE", help="GLUE task of the main table")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default="", help="write the results here as JSON")
    p.add_argument("--teacher", default="", help="fine-tuned teacher checkpoint for --task "
                   "(default: the base with a random head)")
    p.add_argument("--base", default="", help="converted BERT folder (model.pt, dict.txt) for "
                   "the vocabulary and the student init (default: all-MiniLM-L6-v2)")
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-positions", type=int, default=128)
    p.add_argument("--pad-length", type=int, default=128, help="length of the padded variant")
    p.add_argument("--steps", type=int, default=6, help="timed batches per pass")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    p.add_argument("--epoch-tasks", default="RTE,CoLA", help="tasks of the epoch estimate "
                   "(comma list; empty: skip)")
    p.add_argument("--epoch-batches", type=int, default=6,
                   help="sampled batches per epoch estimate")
    p.add_argument("--epoch-repeats", type=int, default=2,
                   help="timed passes over the sampled epoch batches (median reported)")
    p.add_argument("--variants", default="", help="comma list restricting the main table")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16")
    prec.add_argument("--bf16", dest="precision", action="store_const", const="bf16")
    p.add_argument("--work-dir", default="", help="keep converted model, data and cache here "
                   "(reused by later runs; default: a temporary folder)")
    args = p.parse_args(argv)
    args.precision = args.precision or "fp32"
    args.epoch_tasks = [t for t in args.epoch_tasks.split(",") if t]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    if args.precision == "fp16" and args.device == "cpu":
        p.error("--fp16 needs --device cuda (use --bf16 on the CPU)")
    if args.pad_length > args.max_positions:
        p.error("--pad-length exceeds --max-positions")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    with tempfile.TemporaryDirectory(prefix="crild-bench-") as tmp:
        work = args.work_dir or tmp
        os.makedirs(work, exist_ok=True)
        base = prepare_base(args.base, work)
        data = prepare_data(args.glue_dir, args.task, base, work)
        teacher = args.teacher or teacher_with_random_head(base, data, work)
        bench = Bench(args, data, teacher, base)
        start = time.time()
        result: Dict[str, Any] = {"environment": environment(args), "config": {
            "task": args.task, "teacher": teacher, "base": base,
            "student_layers": args.student_layers, "batch_size": args.batch_size,
            "max_positions": args.max_positions, "pad_length": args.pad_length,
            "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
            "teacher_layers": bench.task.teacher.num_layers,
            "step": "task.train_step (criterion forward + backward); adam_update apart",
            "tokens": "real (unpadded) tokens"}}
        result.update(run_main_table(bench, args, work))
        result["ratios"] = ratios(result["variants"])
        result["epochs"] = run_epochs(args, base, work, bench)
        result["wall_s"] = round(time.time() - start, 1)
    print(format_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


def console_main(argv=None) -> int:
    """The command: progress on stdout, fairseq's and hydra's notices silenced."""
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout, force=True)
    for _name in ("fairseq", "fairseq_crild"):
        logging.getLogger(_name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="hydra")
    warnings.filterwarnings("ignore", category=FutureWarning)
    return main(argv)


if __name__ == "__main__":
    sys.exit(console_main())
