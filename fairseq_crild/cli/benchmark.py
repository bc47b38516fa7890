"""Speed and memory of the distillation steps on real GLUE batches, in one process.

``crild-benchmark`` is the installed command; ``python scripts/benchmark.py`` runs the same
``main`` from a source checkout.

    crild-benchmark --glue-dir GLUE --task RTE --threads 2 [--json FILE]
        [--teacher CKPT] [--base DIR] [--student-layers 3] [--batch-size 32]
        [--steps 6 --warmup 1 --repeats 3 --interleave 1] [--reference VARIANT]
        [--gemm-size 2048 --gemm-repeats 3] [--epoch-tasks RTE,CoLA --epoch-batches 6
        --epoch-repeats 2] [--variants a,b] [--device cpu|cuda]
        [--fp16 | --bf16 | --precisions fp32,bf16] [--work-dir DIR] [--profile VARIANT]

What it builds: the converted all-MiniLM-L6-v2 (``--base``, default: converted into the work
folder) gives the dictionary and the student's initial layers (its first
``--student-layers``); the teacher is ``--teacher`` (e.g. a fine-tuned
runs/teachers/RTE-lr2e-5/checkpoint_best.pt) or, without one, the base with a random head
(timings do not depend on the weights). The task's training split is binarised into the work
folder and batched exactly as ``fairseq-train`` batches it (``distill_glue``: length-sorted
buckets of ``--batch-size`` sentences); the timed batches are ``--steps`` batches spread
evenly over that length order, so their length mix is the epoch's. Every training variant
runs the real task and criterion objects, built by fairseq's own option parser
(``task.train_step``: criterion forward + backward). Each of ``--precisions`` gets its own
task, teacher and students (a shared teacher would be cast back and forth).

Variants: the teacher encoder's matmuls alone at each batch's shape (``encoder_gemms``, no
training step: the ceiling of the steps' share of the GEMM peak at these shapes,
fairseq_crild/cli/benchmark_gemm.py); teacher forward; student forward+backward (head
logits, sum backward); student clean forward (no grad, as the consistency term's); fine-tune
step (glue_ce); KD step (live teacher); KD step with cached teacher logits (--teacher-logit-
cache; the one-off cache build is timed separately); CR-ILD stage-1 step (preset cr_ild:
Q/K/V relations of the last layer, mixup, consistency on every object, so it makes the clean
pass; epoch 11 of 20, the consistency weight ramped up) on length buckets; the same without
its clean pass (``--consistency-weight 0``); the same preset step on fresh mixup pairs (the
batches ``--train-batches auto`` gives a mixing criterion); the preset step on the length-
bucket batches padded to ``--pad-length`` (the stand-in for the authors' code); one Adam
update of the student (not part of the steps above). Timed only when ``--variants`` names
it: ``cr_ild_unshared_step``, the preset step with the Q/K/V relations recomputed for each
term (no relation memo; ratio ``speedup_relation_memo``), and ``cr_ild_full_layers_step``,
the preset step with every encoder layer run to its end (no ``stop_early``; ratio
``speedup_stop_early``); ``finetune_hash_dropout_step``, ``cr_ild_hash_dropout_step`` and
``cr_ild_fresh_hash_dropout_step``, those steps with ``--dropout-impl hash`` (ratios
``speedup_hash_dropout_*``); ``cr_ild_cpp_kl_step``, ``cr_ild_cpp_kl_hash_dropout_step`` and
``cr_ild_fresh_cpp_kl_hash_dropout_step``, the CR-ILD step with ``--relation-kl-impl cpp``
(and hash dropout, on buckets or fresh pairs; ratios ``speedup_relation_kernel``,
``speedup_cpp_kl_hash_dropout_over_pad128``, ``speedup_fresh_cpp_kl_hash_dropout_over_pad128``).
The student clean forward stops at the last layer's Q/K/V, as the criterion's clean pass. Tokens/s
counts real (unpadded) tokens for every variant, so padded variants show useful throughput.

Timing: ``--warmup`` untimed steps per variant, then ``--interleave`` rounds; each round
times every variant, and one GEMM per precision (``--gemm-repeats`` products of
``--gemm-size``^3, the peak), round-robin, each ``--repeats`` passes over its batches in a
row (the round's value is their median). Reported: medians (and min/max, quartiles) over
rounds; ratios between variants and the share of the GEMM peak are taken within each round
on seconds per example (per FLOP for the peak), then their median, so a load change between
rounds cancels. ``--interleave 1 --repeats 3`` (the default) is the former one-after-another
measurement. FLOPs (useful and executed): fairseq_crild/cli/benchmark_flops.py; ``--json``
keeps every round's raw seconds.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation before the
variant; on the CPU, the peak resident set size above the value before the variant, sampled
every millisecond by a thread during a separate untimed pass (after ``malloc_trim`` returns
freed heap to the OS; ``getrusage`` maxrss cannot be reset, so only the first variant could
be read from it). Both exclude the model weights already loaded.

Profile: ``--profile VARIANT[,VARIANT]`` (e.g. cr_ild_step) profiles each variant's step plus
one Adam update with torch.profiler at each of ``--precisions`` (``--warmup`` untimed steps, then
``--steps``) and prints the self CPU time per op class instead of the tables
(fairseq_crild/cli/benchmark_profile.py).

Epochs: for each of ``--epoch-tasks``, the CR-ILD preset step is timed on ``--epoch-batches``
batches spread evenly over the epoch's length order (a fixed, stratified sample, not the
full epoch) of each layout: length buckets ("dynamic"), fresh mixup pairs ("fresh") and
buckets padded to ``--pad-length``; layouts (and precisions) interleaved over
``--epoch-repeats`` rounds, scaled to the layout's epoch batch count. Tasks other than
``--task`` use the base with a random head as teacher (CR-ILD never reads the head).
"""

from __future__ import annotations

import argparse
import copy
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
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from fairseq_crild.cli.benchmark_flops import EncoderShape, variant_flops
from fairseq_crild.cli.benchmark_gemm import EncoderGemms, gemm_pass
from fairseq_crild.cli.benchmark_rounds import (
    Timer,
    per_round_ratio,
    perf_timer,
    round_seconds,
    run_rounds,
    summary,
)

# the plugin folder itself (a source checkout's or the installed package's)
USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = "glue"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
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


def memory_pass(run: Callable[[], None], device: torch.device) -> Dict[str, float]:
    """Peak memory of one untimed pass, above the level before it (see the module notes)."""
    with PeakMemory(device) as mem:
        run()
    return {"peak_mem_mb": round(mem.above_base_mb, 1), "peak_total_mb": round(mem.total_mb, 1)}


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


_CFG_CACHE: Dict[Tuple[str, ...], Any] = {}


def fairseq_cfg(data: str, argv: List[str]):
    """The configuration ``fairseq-train DATA argv`` would run with (a fresh copy; parsed
    once per argv: fairseq's parser takes a second, and each precision asks again)."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    key = (data, *argv)
    if key not in _CFG_CACHE:
        args = options.parse_args_and_arch(options.get_training_parser(),
                                           input_args=[data, "--user-dir", USER_DIR, *argv])
        _CFG_CACHE[key] = convert_namespace_to_omegaconf(args)
    return copy.deepcopy(_CFG_CACHE[key])


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

    def __init__(self, args, data: str, teacher: str, base: str, precision: str = "fp32"):
        from fairseq import tasks

        self.args = args
        self.device = torch.device(args.device)
        self.precision = precision  # one Bench per precision: its teacher follows its students
        self.dtype = DTYPES[precision]
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
    def epoch_batches(self, layout: str = "length-buckets") -> List[np.ndarray]:
        """A training epoch's batches in length order: ``length-buckets`` as fairseq-train
        forms them without mixup, ``fresh-pairs`` as ``--train-batches auto`` forms them for
        a mixing criterion (epoch 1's random partners, each batch laid out for the reverse
        rule). Explicit, since the task's own choice follows the last criterion built."""
        sizes = np.asarray(self.task.dataset("train").sizes)
        if layout == "fresh-pairs":
            from fairseq_crild.data.batching import fresh_pair_batches

            batches, _ = fresh_pair_batches(sizes, 1, 1, self.args.batch_size)
        else:
            saved = self.task.cfg.train_batches
            self.task.cfg.train_batches = "length-buckets"
            try:
                itr = self.task.get_batch_iterator(
                    dataset=self.task.dataset("train"), max_sentences=self.args.batch_size,
                    max_positions=self.task.max_positions(), ignore_invalid_inputs=True,
                    seed=1, disable_iterator_cache=True)
                batches = itr.frozen_batches
            finally:
                self.task.cfg.train_batches = saved
        batches = [np.asarray(b) for b in batches if len(b)]
        return sorted(batches, key=lambda b: (float(np.mean(sizes[b])), len(b)))

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
        # as the criterion asks: the last layer's Q/K/V, stopping there
        request = FeatureRequest(qkv=frozenset({model.num_layers - 1}), stop_early=True)

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
HASH_DROPOUT = ["--dropout-impl", "hash"]
CPP_KL = ["--relation-kl-impl", "cpp"]
VARIANTS = ("encoder_gemms", "teacher_fwd", "student_fwd_bwd", "student_clean_fwd", "finetune_step",
            "kd_step", "kd_cached_step", "cr_ild_step", "cr_ild_no_clean_step",
            "cr_ild_fresh_step", "cr_ild_pad128_step", "adam_update")
#: variants timed only when --variants names them: the CR-ILD step with the Q/K/V relations
#: recomputed per term (CrIldCriterion.share_relations = False), the A/B of the relation memo;
#: the CR-ILD step with every encoder layer run (CrIldCriterion.stop_early = False); the
#: fine-tune and CR-ILD steps (buckets, fresh pairs) with --dropout-impl hash; the CR-ILD step
#: with --relation-kl-impl cpp, alone and with hash dropout
EXTRA_VARIANTS = ("cr_ild_unshared_step", "cr_ild_full_layers_step", "finetune_hash_dropout_step",
                  "cr_ild_hash_dropout_step", "cr_ild_fresh_hash_dropout_step",
                  "cr_ild_cpp_kl_step", "cr_ild_cpp_kl_hash_dropout_step",
                  "cr_ild_fresh_cpp_kl_hash_dropout_step")
#: timed passes that are not training steps: no "vs reference" column
NOT_STEPS = ("adam_update", "encoder_gemms")
# the batches each variant runs: length buckets, fresh mixup pairs, or buckets padded
LAYOUT = {"cr_ild_fresh_step": "fresh", "cr_ild_pad128_step": "pad128",
          "cr_ild_fresh_hash_dropout_step": "fresh",
          "cr_ild_fresh_cpp_kl_hash_dropout_step": "fresh"}
# same-precision ratios: key -> (numerator, denominators), on seconds per example per round
RATIOS = {
    "cr_ild_vs_passes": ("cr_ild_step", "teacher_fwd", "student_fwd_bwd", "student_clean_fwd"),
    "cr_ild_no_clean_vs_passes": ("cr_ild_no_clean_step", "teacher_fwd", "student_fwd_bwd"),
    "clean_pass_cost": ("cr_ild_step", "cr_ild_no_clean_step"),
    "kd_vs_passes": ("kd_step", "teacher_fwd", "student_fwd_bwd"),
    "kd_cached_vs_finetune": ("kd_cached_step", "finetune_step"),
    "finetune_vs_fwd_bwd": ("finetune_step", "student_fwd_bwd"),
    "fresh_vs_buckets": ("cr_ild_fresh_step", "cr_ild_step"),
    "dynamic_vs_pad128": ("cr_ild_step", "cr_ild_pad128_step"),
    # a forward's time outside its matmuls: teacher forward / its matmuls alone
    "teacher_fwd_vs_encoder_gemms": ("teacher_fwd", "encoder_gemms"),
    "speedup_dynamic_over_pad128": ("cr_ild_pad128_step", "cr_ild_step"),
    "speedup_fresh_over_pad128": ("cr_ild_pad128_step", "cr_ild_fresh_step"),
    "speedup_relation_memo": ("cr_ild_unshared_step", "cr_ild_step"),
    "speedup_stop_early": ("cr_ild_full_layers_step", "cr_ild_step"),
    "speedup_hash_dropout_finetune": ("finetune_step", "finetune_hash_dropout_step"),
    "speedup_hash_dropout_cr_ild": ("cr_ild_step", "cr_ild_hash_dropout_step"),
    "speedup_hash_dropout_fresh": ("cr_ild_fresh_step", "cr_ild_fresh_hash_dropout_step"),
    "speedup_relation_kernel": ("cr_ild_step", "cr_ild_cpp_kl_step"),
    "speedup_cpp_kl_hash_dropout_over_pad128": ("cr_ild_pad128_step",
                                                "cr_ild_cpp_kl_hash_dropout_step"),
    "speedup_fresh_cpp_kl_hash_dropout_over_pad128": ("cr_ild_pad128_step",
                                                      "cr_ild_fresh_cpp_kl_hash_dropout_step"),
}


FLOPS_NOTE = ("useful: real tokens x (teacher forward + 3 x student forward), "
              "2(4h^2 + 2hf) + 4Lh per token per layer, L the example's real length; "
              "executed: the same passes at the padded batch shape; the CR-ILD clean pass, "
              "embeddings, head and loss arithmetic uncounted (fairseq_crild/cli/"
              "benchmark_flops.py); share of peak: per round against that round's GEMM")


def label(name: str, precision: str, precisions: List[str]) -> str:
    """A variant's key: its name, plus ``@precision`` when a run times several."""
    return name if len(precisions) == 1 else f"{name}@{precision}"


def gemm_label(precision: str) -> str:
    return f"gemm_{precision}"


def encoder_shape(model: torch.nn.Module) -> EncoderShape:
    cfg = model.cfg
    return EncoderShape(int(cfg.encoder_layers), int(cfg.encoder_embed_dim),
                        int(cfg.encoder_ffn_embed_dim))


def batch_lengths(sample: Dict[str, Any], pad: int) -> Tuple[List[int], int]:
    """(real length of each example, padded width) of a collated batch."""
    tokens = sample["net_input"]["src_tokens"]
    return (tokens.ne(pad).sum(dim=1).tolist(), int(tokens.size(1)))


@dataclass
class Timed:
    """One timed variant: its step, the batches it runs, and what one pass over them holds."""

    name: str
    precision: str
    step: Callable[[Dict[str, Any]], Any]
    batches: List[Dict[str, Any]]
    flops: Optional[Dict[str, int]]

    def run_pass(self) -> None:
        for batch in self.batches:
            self.step(batch)

    @property
    def examples(self) -> int:
        return sum(int(b["nsentences"]) for b in self.batches)

    @property
    def tokens(self) -> int:
        return sum(int(b["ntokens"]) for b in self.batches)


def encoder_gemms_step(bench: Bench, shape: EncoderShape) -> Callable[[Dict[str, Any]], None]:
    """The teacher encoder's matmuls alone at each batch's (sentences, width): the ceiling
    for the steps' share of the GEMM peak at these shapes (benchmark_gemm.py)."""
    heads = int(bench.task.teacher.model.cfg.encoder_attention_heads)
    gemms = EncoderGemms(shape, heads, DTYPES[bench.precision], bench.device)

    def step(sample: Dict[str, Any]) -> None:
        gemms(*sample["net_input"]["src_tokens"].shape)
    return step


def unshared(bench: Bench) -> Trainee:
    """The CR-ILD preset's trainee with the relations recomputed per term (no memo)."""
    trainee = bench.trainee("cr_ild_unshared", CR_ILD)
    trainee.criterion.share_relations = False
    return trainee


def full_layers(bench: Bench) -> Trainee:
    """The CR-ILD preset's trainee with every encoder layer run (no early stop)."""
    trainee = bench.trainee("cr_ild_full_layers", CR_ILD)
    trainee.criterion.stop_early = False
    return trainee


def build_variants(benches: Dict[str, Bench], args, work: str) -> Tuple[
        Dict[str, Timed], Dict[str, Any]]:
    """Every (variant, precision) to time, trainees built and batches collated up front."""
    first = next(iter(benches.values()))
    buckets = first.epoch_batches("length-buckets")
    picks = {"buckets": first.spread(buckets, args.steps),
             "fresh": first.spread(first.epoch_batches("fresh-pairs"), args.steps)}
    wanted = [v for v in VARIANTS + EXTRA_VARIANTS
              if v in args.variants or (not args.variants and v in VARIANTS)]
    extra: Dict[str, Any] = {"epoch_batches": len(buckets),
                             "timed_batches": len(picks["buckets"])}
    timed: Dict[str, Timed] = {}
    for precision, bench in benches.items():
        batches = {"buckets": bench.collate(picks["buckets"]),
                   "fresh": bench.collate(picks["fresh"]),
                   "pad128": bench.collate(picks["buckets"], padded=True)}
        ft = bench.trainee("finetune", ["--criterion", "glue_ce"])
        cache_dir = os.path.join(work, f"teacher_logits-{precision}")

        def kd_cached(bench: Bench = bench, cache_dir: str = cache_dir,
                      first_batch: Dict[str, Any] = batches["buckets"][0]) -> Trainee:
            trainee = bench.trainee("kd_cached", [
                "--criterion", "kd", "--teacher-logit-cache", "--teacher-logit-cache-dir",
                cache_dir])
            if trainee.criterion._logit_cache is None:
                like = next(trainee.model.parameters())
                start = time.perf_counter()
                trainee.criterion.cached_teacher_logits(first_batch, like)
                extra[f"cache_build_s_{precision}"] = round(time.perf_counter() - start, 2)
                extra[f"cache_file_{precision}"] = trainee.criterion._logit_cache.path
            return trainee

        steps: Dict[str, Callable[[], Callable]] = {
            "teacher_fwd": bench.teacher_forward,
            "student_fwd_bwd": lambda: bench.student_forward_backward(ft),
            "student_clean_fwd": lambda: bench.student_clean_forward(ft),
            "finetune_step": lambda: bench.train_step(ft),
            "kd_step": lambda: bench.train_step(bench.trainee("kd", ["--criterion", "kd"])),
            "kd_cached_step": lambda: bench.train_step(kd_cached()),
            "cr_ild_step": lambda: bench.train_step(bench.trainee("cr_ild", CR_ILD)),
            "cr_ild_no_clean_step": lambda: bench.train_step(bench.trainee(
                "cr_ild_no_clean", CR_ILD + ["--consistency-weight", "0"])),
            "cr_ild_fresh_step": lambda: bench.train_step(bench.trainee("cr_ild", CR_ILD)),
            "cr_ild_pad128_step": lambda: bench.train_step(bench.trainee("cr_ild", CR_ILD)),
            "adam_update": lambda: bench.adam_update(ft, batches["buckets"][0]),
            "cr_ild_unshared_step": lambda: bench.train_step(unshared(bench)),
            "cr_ild_full_layers_step": lambda: bench.train_step(full_layers(bench)),
            "finetune_hash_dropout_step": lambda: bench.train_step(bench.trainee(
                "finetune_hash_dropout", ["--criterion", "glue_ce"] + HASH_DROPOUT)),
            "cr_ild_hash_dropout_step": lambda: bench.train_step(bench.trainee(
                "cr_ild_hash_dropout", CR_ILD + HASH_DROPOUT)),
            "cr_ild_cpp_kl_step": lambda: bench.train_step(bench.trainee(
                "cr_ild_cpp_kl", CR_ILD + CPP_KL)),
            "cr_ild_cpp_kl_hash_dropout_step": lambda: bench.train_step(bench.trainee(
                "cr_ild_cpp_kl_hash_dropout", CR_ILD + CPP_KL + HASH_DROPOUT)),
            "cr_ild_fresh_cpp_kl_hash_dropout_step": lambda: bench.train_step(bench.trainee(
                "cr_ild_cpp_kl_hash_dropout", CR_ILD + CPP_KL + HASH_DROPOUT)),
            "cr_ild_fresh_hash_dropout_step": lambda: bench.train_step(bench.trainee(
                "cr_ild_hash_dropout", CR_ILD + HASH_DROPOUT)),
            "encoder_gemms": lambda: encoder_gemms_step(bench, teacher_shape),
        }
        pad = bench.task.source_dictionary.pad()
        teacher_shape = encoder_shape(bench.task.teacher.model)
        student_shape = encoder_shape(ft.model)
        for name in wanted:
            data = batches[LAYOUT.get(name, "buckets")]
            flops = variant_flops(name, teacher_shape, student_shape,
                                  [batch_lengths(b, pad) for b in data])
            timed[label(name, precision, args.precisions)] = Timed(
                name, precision, steps[name](), data, flops)
        # epoch 11 of 20: the consistency weight has ramped up (0.1 * 10 / 20), so the
        # CR-ILD preset makes its clean pass
        bench.task.begin_epoch(11, None)
    return timed, extra


def time_variants(timed: Dict[str, Timed], args, device: torch.device,
                  gemm: bool = True, timer: Optional[Timer] = None,
                  memory: bool = True) -> Dict[str, Any]:
    """Warm-up, ``--interleave`` rounds (with the GEMM peak of each precision as one more
    entry of every round), then one untimed memory pass per variant."""
    passes: Dict[str, Callable[[], None]] = {}
    work: Dict[str, float] = {}
    flops: Dict[str, float] = {}
    for key, t in timed.items():
        for i in range(args.warmup):
            t.step(t.batches[i % len(t.batches)])
        passes[key] = t.run_pass
        work[key] = t.examples
        if t.flops:
            flops[key] = t.flops["useful"]
    gemms: Dict[str, Dict[str, Any]] = {}
    if gemm:
        for precision in args.precisions:
            run, n_flops = gemm_pass(DTYPES[precision], args.gemm_size, args.gemm_repeats, device)
            run()  # warm-up: library dispatch, first touch of the buffers
            passes[gemm_label(precision)] = run
            flops[gemm_label(precision)] = n_flops
            gemms[precision] = {"n": args.gemm_size, "matmuls_per_round": args.gemm_repeats,
                                "flops_per_round": n_flops}
    if timer is None:
        timer = perf_timer(lambda: _sync(device))
    records = run_rounds(passes, args.interleave, args.repeats, timer, logger.info)
    mem = {key: memory_pass(t.run_pass, device) for key, t in timed.items()} if memory else {}
    return {"records": records, "work": work, "flops": flops, "gemm": gemms, "memory": mem}


def summarise(timed: Dict[str, Timed], measured: Dict[str, Any], args) -> Dict[str, Any]:
    """Per variant: medians and spread over rounds; same-round ratios, their medians."""
    records, work, flops = measured["records"], measured["work"], measured["flops"]
    peaks: Dict[str, Any] = {}
    for precision, g in measured["gemm"].items():
        secs = round_seconds(records, gemm_label(precision))
        peaks[precision] = {**g, "gflops_per_s": summary(
            [g["flops_per_round"] / s / 1e9 for s in secs])}
    reference = args.reference
    if reference and reference not in timed:
        reference = label(reference, args.precisions[0], args.precisions)
    if reference not in timed:
        reference = ""
    variants: Dict[str, Any] = {}
    for key, t in timed.items():
        secs = round_seconds(records, key)
        row: Dict[str, Any] = {
            "name": t.name, "precision": t.precision,
            "ms_per_step": 1000 * statistics.median(secs) / len(t.batches),
            "examples_per_s": summary([t.examples / s for s in secs])["median"],
            "tokens_per_s": summary([t.tokens / s for s in secs])["median"],
            "examples_per_s_stats": summary([t.examples / s for s in secs]),
            "tokens_per_s_stats": summary([t.tokens / s for s in secs]),
            "round_s": secs, "batches": len(t.batches), "examples": t.examples,
            "tokens": t.tokens,
            "padded_tokens": sum(int(b["net_input"]["src_tokens"].numel()) for b in t.batches),
            **measured["memory"].get(key, {})}
        if t.flops:
            row["useful_flops"] = t.flops["useful"]
            row["executed_flops"] = t.flops["executed"]
            row["useful_gflops_per_s"] = summary([t.flops["useful"] / s / 1e9 for s in secs])
            row["executed_gflops_per_s"] = summary(
                [t.flops["executed"] / s / 1e9 for s in secs])
            if t.precision in peaks:
                share = per_round_ratio(records, flops, gemm_label(t.precision), key)
                row["useful_share_of_peak"] = summary(share)
                row["executed_share_of_peak"] = summary(
                    [u * t.flops["executed"] / t.flops["useful"] for u in share])
        if reference and t.name not in NOT_STEPS:
            row["vs_reference"] = summary(per_round_ratio(records, work, reference, key))
        variants[key] = row
    ratio_rounds: Dict[str, List[float]] = {}
    for precision in args.precisions:
        for key, (num, *den) in RATIOS.items():
            parts = [label(v, precision, args.precisions) for v in (num, *den)]
            if all(p in timed for p in parts):
                ratio_rounds[label(key, precision, args.precisions)] = per_round_ratio(
                    records, work, *parts)
    if "bf16" in args.precisions and "fp32" in args.precisions:
        for name in VARIANTS + EXTRA_VARIANTS:
            a, b = label(name, "fp32", args.precisions), label(name, "bf16", args.precisions)
            if a in timed and b in timed and name != "adam_update":
                ratio_rounds[f"{name}_speedup_bf16_over_fp32"] = per_round_ratio(
                    records, work, a, b)
    return {"variants": variants, "peak": peaks, "reference": reference,
            "ratios": {k: round(statistics.median(v), 3) for k, v in ratio_rounds.items()},
            "ratio_stats": {k: summary(v) for k, v in ratio_rounds.items()},
            "rounds": records}


def run_main_table(benches: Dict[str, Bench], args, work: str,
                   timer: Optional[Timer] = None) -> Dict[str, Any]:
    timed, extra = build_variants(benches, args, work)
    device = next(iter(benches.values())).device
    measured = time_variants(timed, args, device, gemm=args.gemm_size > 0, timer=timer,
                             memory=args.memory)
    return {**summarise(timed, measured, args), **extra}


EPOCH_LAYOUTS = (("dynamic", "length-buckets", False), ("fresh", "fresh-pairs", False),
                 ("pad128", "length-buckets", True))


def run_epochs(args, base: str, work: str, main: Dict[str, Bench],
               timer: Optional[Timer] = None) -> Dict[str, Any]:
    """CR-ILD step per batch layout over a stratified sample of each task's epoch, scaled to
    the epoch's batch count; layouts and precisions interleaved over ``--epoch-repeats``
    rounds (the main table's rounds)."""
    out: Dict[str, Any] = {}
    for task in args.epoch_tasks:
        timed: Dict[str, Timed] = {}
        epoch_counts: Dict[str, int] = {}
        row: Dict[str, Any] = {}
        for precision in args.precisions:
            if task == args.task:
                bench = main[precision]
            else:
                data = prepare_data(args.glue_dir, task, base, work)
                bench = Bench(args, data, teacher_with_random_head(base, data, work), base,
                              precision)
            if args.epoch_dropout_impl == "hash":
                trainee = bench.trainee("cr_ild_hash_dropout", CR_ILD + HASH_DROPOUT)
            else:
                trainee = bench.trainee("cr_ild", CR_ILD)
            step = bench.train_step(trainee)
            bench.task.begin_epoch(11, None)
            for kind, layout, padded in EPOCH_LAYOUTS:
                all_batches = bench.epoch_batches(layout)
                picked = bench.spread(all_batches, args.epoch_batches)
                key = label(kind, precision, args.precisions)
                timed[key] = Timed("cr_ild_step", precision, step,
                                   bench.collate(picked, padded), None)
                epoch_counts[key] = len(all_batches)
            sizes = bench.task.dataset("train").sizes
            row["examples"] = int(len(sizes))
            row["mean_tokens_per_example"] = round(float(np.mean(sizes)), 1)
        logger.info(f"epoch estimate {task} ...")
        sub = argparse.Namespace(**{**vars(args), "interleave": args.epoch_repeats,
                                    "repeats": 1})
        measured = time_variants(timed, sub, main[args.precisions[0]].device, gemm=False,
                                 timer=timer, memory=False)
        records = measured["records"]
        for key, t in timed.items():
            secs = round_seconds(records, key)
            epoch_s = [s * epoch_counts[key] / len(t.batches) for s in secs]
            row[f"{key}_epoch_batches"] = epoch_counts[key]
            row[f"{key}_sampled_batches"] = len(t.batches)
            row[f"{key}_epoch_s_est"] = round(statistics.median(epoch_s), 1)
            row[f"{key}_ms_per_step"] = round(1000 * statistics.median(secs) / len(t.batches), 1)
        for precision in args.precisions:
            dyn, fresh, pad = (label(k, precision, args.precisions)
                               for k in ("dynamic", "fresh", "pad128"))
            # epoch-scaled per round, from the unrounded seconds (a tiny epoch rounds to 0.0)
            sampled = {k: len(timed[k].batches) / epoch_counts[k] for k in (dyn, fresh, pad)}
            row[label("speedup_dynamic_over_pad128", precision, args.precisions)] = round(
                statistics.median(per_round_ratio(records, sampled, pad, dyn)), 2)
            row[label("speedup_fresh_over_pad128", precision, args.precisions)] = round(
                statistics.median(per_round_ratio(records, sampled, pad, fresh)), 2)
        row["rounds"] = records
        out[task] = row
    return out


# --------------------------------------------------------------------------- output


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: Dict[str, Any]) -> str:
    ref = result.get("reference") or "-"
    lines = [f"median of {result['config']['interleave']} interleaved round(s); "
             f"examples/s [min-max]; reference: {ref}", "",
             "| variant | ms/step | examples/s | tokens/s | useful GFLOP/s | % of peak "
             "(useful / executed) | vs reference | peak MB |", "|---|---|---|---|---|---|---|---|"]
    for key, v in result["variants"].items():
        ex = v["examples_per_s_stats"]
        gf = v.get("useful_gflops_per_s", {}).get("median")
        share = v.get("useful_share_of_peak", {}).get("median")
        ex_share = v.get("executed_share_of_peak", {}).get("median")
        shares = "-" if share is None else f"{100 * share:.0f} / {100 * ex_share:.0f}"
        vs = v.get("vs_reference", {}).get("median")
        if v["name"] == "adam_update":
            lines.append(f"| {key} | {v['ms_per_step']:.1f} | - | - | - | - | - | "
                         f"{_fmt(v.get('peak_mem_mb'), '.0f')} |")
            continue
        lines.append(f"| {key} | {v['ms_per_step']:.1f} | {ex['median']:.1f} "
                     f"[{ex['min']:.1f}-{ex['max']:.1f}] | {v['tokens_per_s']:.0f} | "
                     f"{_fmt(gf, '.3g')} | {shares} | {_fmt(vs, '.2f')}x | "
                     f"{_fmt(v.get('peak_mem_mb'), '.0f')} |")
    if result.get("peak"):
        lines.append("")
        for precision, p in result["peak"].items():
            g = p["gflops_per_s"]
            lines.append(f"GEMM peak {precision} ({p['n']}^3): {g['median']:.4g} GFLOP/s "
                         f"[{g['min']:.4g}-{g['max']:.4g}]")
    lines.append("")
    for k, v in result["ratios"].items():
        st = result["ratio_stats"][k]
        lines.append(f"{k}: {v} [{st['min']:.3f}-{st['max']:.3f}]")
    if result.get("epochs"):
        lines += ["", "| epoch | layout | batches (sampled) | epoch s (est.) |",
                  "|---|---|---|---|"]
        for task, e in result["epochs"].items():
            for key in [k[:-len("_epoch_s_est")] for k in e if k.endswith("_epoch_s_est")]:
                lines.append(f"| {task} | {key} | {e[key + '_epoch_batches']} "
                             f"({e[key + '_sampled_batches']}) | {e[key + '_epoch_s_est']} |")
            lines += [f"{task} {k}: {v}x" for k, v in e.items() if k.startswith("speedup")]
    return "\n".join(lines)


def environment(args) -> Dict[str, Any]:
    env = {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
           "torch_version": torch.__version__, "python": platform.python_version(),
           "device": args.device, "precisions": args.precisions,
           "machine": platform.machine()}
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
    p.add_argument("--repeats", type=int, default=3, help="timed passes of a variant in a row "
                   "within each round (the round's value is their median)")
    p.add_argument("--interleave", type=int, default=1, metavar="N",
                   help="rounds: every variant (and the GEMM peak) is timed once per round, "
                   "round-robin, and medians over the N rounds are reported; ratios are "
                   "taken within each round, then their median (e.g. --interleave 7 "
                   "--repeats 1 on a shared machine)")
    p.add_argument("--reference", default="cr_ild_pad128_step",
                   help="the variant the 'vs reference' column divides by (examples/s; with "
                   "several --precisions, NAME@PRECISION, default: that of the first)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the untimed peak-memory pass of each variant")
    p.add_argument("--gemm-size", type=int, default=2048, help="N of the N^3 GEMM whose "
                   "speed is the peak of each precision (0: no peak)")
    p.add_argument("--gemm-repeats", type=int, default=3,
                   help="GEMMs per round (their mean speed is the round's peak)")
    p.add_argument("--epoch-tasks", default="RTE,CoLA", help="tasks of the epoch estimate "
                   "(comma list; empty: skip)")
    p.add_argument("--epoch-batches", type=int, default=6,
                   help="sampled batches per epoch estimate")
    p.add_argument("--epoch-repeats", type=int, default=2,
                   help="timed passes over the sampled epoch batches (median reported)")
    p.add_argument("--epoch-dropout-impl", default="torch", choices=["torch", "hash"],
                   help="the model's --dropout-impl in every layout of the epoch estimate")
    p.add_argument("--variants", default="", help="comma list restricting the main table")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16")
    prec.add_argument("--bf16", dest="precision", action="store_const", const="bf16")
    prec.add_argument("--precisions", default="", help="comma list of fp32, bf16, fp16: "
                      "every variant at each, interleaved in the same rounds (one task, "
                      "teacher and students per precision)")
    p.add_argument("--profile", default="", metavar="VARIANT[,VARIANT]", help="profile "
                   "these variants' steps (each plus one Adam update) per op class with "
                   "torch.profiler at each precision, print that table and skip the timing "
                   "tables (e.g. cr_ild_step,cr_ild_unshared_step: with and without the "
                   "relation memo)")
    p.add_argument("--work-dir", default="", help="keep converted model, data and cache here "
                   "(reused by later runs; default: a temporary folder)")
    args = p.parse_args(argv)
    args.precisions = ([x for x in args.precisions.split(",") if x] if args.precisions
                       else [args.precision or "fp32"])
    bad = [x for x in args.precisions if x not in DTYPES]
    if bad:
        p.error(f"unknown precisions {bad}; choose from {', '.join(DTYPES)}")
    if args.interleave < 1 or args.repeats < 1:
        p.error("--interleave and --repeats must be >= 1")
    args.epoch_tasks = [t for t in args.epoch_tasks.split(",") if t]
    args.variants = [v for v in args.variants.split(",") if v]
    known = VARIANTS + EXTRA_VARIANTS
    args.profile = [v for v in args.profile.split(",") if v]
    unknown = (set(args.variants) | set(args.profile)) - set(known)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(known)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    if "fp16" in args.precisions and args.device == "cpu":
        p.error("--fp16 needs --device cuda (use --bf16 on the CPU)")
    if args.pad_length > args.max_positions:
        p.error("--pad-length exceeds --max-positions")
    return args


def main(argv=None, timer: Optional[Timer] = None) -> int:
    """The command; ``timer`` (seconds of one call) replaces the wall clock in tests."""
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
        benches = {precision: Bench(args, data, teacher, base, precision)
                   for precision in args.precisions}
        if args.profile:
            from fairseq_crild.cli.benchmark_profile import format_profile, run_profile

            only = type(args)(**{**vars(args), "variants": list(args.profile)})
            profiled = run_profile(benches, build_variants(benches, only, work)[0], args)
            print(format_profile(profiled))
            if args.json:
                _write_json(args.json, {"environment": environment(args),
                                        "profile": profiled})
            return 0
        start = time.time()
        result: Dict[str, Any] = {"environment": environment(args), "config": {
            "task": args.task, "teacher": teacher, "base": base,
            "student_layers": args.student_layers, "batch_size": args.batch_size,
            "max_positions": args.max_positions, "pad_length": args.pad_length,
            "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
            "interleave": args.interleave, "precisions": args.precisions,
            "gemm_size": args.gemm_size, "gemm_repeats": args.gemm_repeats,
            "epoch_dropout_impl": args.epoch_dropout_impl,
            "teacher_layers": benches[args.precisions[0]].task.teacher.num_layers,
            "step": "task.train_step (criterion forward + backward); adam_update apart",
            "tokens": "real (unpadded) tokens",
            "flops": FLOPS_NOTE}}
        result.update(run_main_table(benches, args, work, timer))
        result["epochs"] = run_epochs(args, base, work, benches, timer)
        result["wall_s"] = round(time.time() - start, 1)
    print(format_table(result))
    if args.json:
        _write_json(args.json, result)
    return 0


def _write_json(path: str, result: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


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
