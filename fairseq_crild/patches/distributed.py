"""fairseq's own distributed training, made to work on CPU (gloo) without incantations.

fairseq 0.12 assumes CUDA on its distributed paths. On a CPU-only machine:

* ``torchrun ... fairseq-train --cpu`` does not distribute: the default
  ``--distributed-world-size`` is the CUDA device count (1), so every process trains alone
  and they race on the save dir; with ``--distributed-world-size N`` fairseq's torchrun
  inference divides by ``torch.cuda.device_count()`` (ZeroDivisionError);
* ``--distributed-world-size N`` alone spawns ``min(cuda devices, N)`` = 0 processes, and
  SLURM inference computes ranks from GPUs per node (0);
* the default backend is NCCL (CUDA only), ``--ddp-backend pytorch_ddp`` passes
  ``device_ids`` (CPU modules refuse them), and ``all_gather_list`` (used to aggregate
  logging outputs that cannot be summed, e.g. STS-B predictions) allocates CUDA buffers.

Besides, fairseq wraps a criterion that holds parameters in DDP too. That is right for a
learned projection (its gradients must be averaged over ranks), wrong for a criterion whose
parameters are all frozen (an EMA copy of the student): PyTorch's DDP refuses a module
without a parameter that requires a gradient.

:func:`install` (run when the plugin is imported, i.e. before ``fairseq-train`` reaches
``call_main``) patches exactly these points and leaves CUDA runs to fairseq. It also applies
``--global-batch-size`` (see :func:`apply_global_batch`). ``fairseq-hydra-train`` imports
the user dir only after launching, so these fixes need ``fairseq-train``.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import warnings
from typing import Any, Callable, List, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist

from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)

TORCHRUN_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


class DistributedConfigError(CrildError, ValueError):
    """A launch or batch setting that cannot work; the message names the option."""


def on_cpu(cfg: Any) -> bool:
    """Whether this run trains on the CPU (``--cpu``, or no CUDA device at all)."""
    return bool(cfg.common.cpu) or not torch.cuda.is_available()


def _default_world_size() -> int:
    """fairseq's default ``--distributed-world-size`` (the CUDA device count, at least 1)."""
    return max(1, torch.cuda.device_count())


def free_port() -> int:
    """A TCP port nobody listens on right now (for a single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slurm_master_host(env: Mapping[str, str]) -> str:
    """First host of the SLURM allocation (``scontrol show hostnames``, as fairseq does)."""
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodes:
        raise DistributedConfigError("SLURM run without SLURM_JOB_NODELIST: cannot find the "
                                     "master host; pass --distributed-init-method tcp://HOST:PORT")
    try:
        out = subprocess.check_output(["scontrol", "show", "hostnames", nodes], text=True)
    except FileNotFoundError:
        raise DistributedConfigError("SLURM variables are set but scontrol is not on PATH; pass "
                                     "--distributed-init-method tcp://HOST:PORT") from None
    return out.split()[0]


def _agree(dt: Any, world: int, source: str) -> None:
    if dt.distributed_world_size not in (_default_world_size(), world):
        raise DistributedConfigError(
            f"--distributed-world-size {dt.distributed_world_size} disagrees with {source} "
            f"({world} processes); leave the option out or make them equal")


def resolve_cpu_launch(cfg: Any, env: Optional[Mapping[str, str]] = None,
                       master_host: Callable[[Mapping[str, str]], str] = slurm_master_host
                       ) -> Optional[int]:
    """Fills ``cfg.distributed_training`` for a CPU run the way fairseq does on GPUs.

    Returns the number of processes this launcher must start itself (spawn), or None when
    the processes already exist (torchrun, srun, explicit ``--distributed-no-spawn``) or
    the run is not distributed. Precedence: an explicit ``--distributed-init-method``, then
    torchrun's environment (env://), then SLURM's (one task per process), then a
    ``--distributed-world-size`` > 1 on this node alone.
    """
    env = os.environ if env is None else env
    dt = cfg.distributed_training
    spawn: Optional[int] = None
    if dt.distributed_init_method is None:
        if all(k in env for k in TORCHRUN_VARS) and int(env["WORLD_SIZE"]) > 1:
            world = int(env["WORLD_SIZE"])
            _agree(dt, world, "torchrun's WORLD_SIZE")
            dt.distributed_init_method = "env://"
            dt.distributed_world_size = world
            dt.distributed_rank = int(env["RANK"])
            dt.device_id = 0
            dt.distributed_no_spawn = True
        elif "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
            world = int(env["SLURM_NTASKS"])
            _agree(dt, world, "SLURM_NTASKS")
            port = dt.distributed_port
            if port <= 0:  # fairseq's choice: a port drawn from the job id, equal on all tasks
                job = env.get("SLURM_JOB_ID", "0") + env.get("SLURM_ARRAY_TASK_ID", "")
                port = random.Random(int(job)).randint(10000, 60000)
            dt.distributed_init_method = f"tcp://{master_host(env)}:{port}"
            dt.distributed_world_size = world
            dt.distributed_rank = int(env["SLURM_PROCID"])
            dt.device_id = 0
            dt.distributed_no_spawn = True
        elif dt.distributed_world_size > 1:
            port = dt.distributed_port if dt.distributed_port > 0 else free_port()
            dt.distributed_init_method = f"tcp://localhost:{port}"
            dt.distributed_rank = 0
            spawn = dt.distributed_world_size
    elif dt.distributed_world_size > 1 and not dt.distributed_no_spawn:
        # fairseq's own flags, one node of several: this node forks --distributed-num-procs
        # processes, ranks --distributed-rank onwards
        spawn = dt.distributed_num_procs or 1
    if dt.distributed_init_method is not None and dt.distributed_world_size > 1:
        if dt.distributed_backend == "nccl":  # fairseq's default, CUDA only
            logger.info("CPU run: distributed backend gloo (NCCL needs CUDA)")
            dt.distributed_backend = "gloo"
    return spawn


def apply_global_batch(cfg: Any) -> None:
    """``--global-batch-size G``: examples per optimizer update over all processes.

    fairseq's ``--batch-size`` is per process (per GPU): the update sees ``batch-size x
    world size x update-freq`` examples, so a recipe's batch (the paper's 32) changes with
    the launch. ``G`` keeps it fixed: the per-process batch becomes ``G / (world size x
    update-freq)``, and a launch that does not divide ``G`` is refused rather than rounded.
    """
    total = int(getattr(cfg.task, "global_batch_size", 0) or 0)
    if total <= 0:
        return
    world = int(cfg.distributed_training.distributed_world_size)
    freqs = sorted({int(f) for f in cfg.optimization.update_freq})
    if len(freqs) != 1:
        raise DistributedConfigError(f"--global-batch-size needs one --update-freq value, got "
                                     f"{list(cfg.optimization.update_freq)}")
    freq = freqs[0]
    per, rest = divmod(total, world * freq)
    if rest or per == 0:
        raise DistributedConfigError(
            f"--global-batch-size {total} is not divisible by world size {world} x "
            f"--update-freq {freq} = {world * freq}: choose a global batch that is a multiple "
            "of it, or another number of processes / --update-freq")
    given = cfg.dataset.batch_size
    if given is not None and int(given) != per:
        raise DistributedConfigError(
            f"--batch-size {given} (per process) contradicts --global-batch-size {total} / "
            f"({world} process(es) x --update-freq {freq}) = {per}; pass only one of them")
    cfg.dataset.batch_size = per
    if cfg.dataset.batch_size_valid is None:
        cfg.dataset.batch_size_valid = per
    logger.info(f"--global-batch-size {total}: {per} examples per process x {world} "
                f"process(es) x --update-freq {freq}")


def data_parallel_position() -> tuple:
    """(rank, world size) of this process in data-parallel training; (0, 1) alone."""
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    from fairseq.distributed import utils as distributed_utils

    return (distributed_utils.get_data_parallel_rank(),
            distributed_utils.get_data_parallel_world_size())


def batch_generator(seed: int, update: int, micro_batch: int) -> torch.Generator:
    """A CPU generator for one training micro-batch, seeded by (``seed``, the update number,
    the batch's position in the update's global batch).

    fairseq shards batches round-robin (rank r gets batches r, r + W, ...) and groups
    ``--update-freq`` U of them per update, so micro-batch m of rank r is batch ``m * W + r``
    of the update: the position, hence the draws, are the same for W ranks x U micro-batches
    as for one process with ``--update-freq W*U``, and a resumed run recomputes them from the
    update number (no RNG state to save).
    """
    rank, world = data_parallel_position()
    state = np.random.SeedSequence([int(seed), int(update), micro_batch * world + rank])
    high, low = (int(x) for x in state.generate_state(2))
    return torch.Generator().manual_seed((high << 32 | low) & ((1 << 63) - 1))


def call_main(original: Callable[..., Any], cfg: Any, main: Callable[..., Any],
              **kwargs: Any) -> Any:
    """fairseq's ``call_main`` with the CPU launch of :func:`resolve_cpu_launch` (and the
    precision check of :func:`fairseq_crild.patches.device.check_precision`)."""
    from fairseq.distributed import utils as distributed_utils

    from fairseq_crild.patches.device import check_precision

    check_precision(cfg)  # --fp16 without CUDA: one sentence, not fairseq's AssertionError
    if not on_cpu(cfg) or cfg.common.tpu:
        if cfg.distributed_training.distributed_init_method is None:
            distributed_utils.infer_init_method(cfg.distributed_training)
        apply_global_batch(cfg)
        return original(cfg, main, **kwargs)
    spawn = resolve_cpu_launch(cfg)
    apply_global_batch(cfg)
    dt = cfg.distributed_training
    if dt.distributed_init_method is None:
        return main(cfg, **kwargs)
    if spawn is None or spawn <= 1:
        dt.distributed_no_spawn = True
        return distributed_utils.distributed_main(0, main, cfg, kwargs)
    kwargs["start_rank"] = dt.distributed_rank
    dt.distributed_rank = None  # distributed_main assigns start_rank + process index
    torch.multiprocessing.spawn(fn=distributed_utils.distributed_main,
                                args=(main, cfg, kwargs), nprocs=spawn, join=True)
    return None


def wrap_model(original: Callable[..., Any], args: Any, model: torch.nn.Module,
               process_group: Any, device: torch.device) -> torch.nn.Module:
    """fairseq's ``DistributedFairseqModel``, plus: a module without a trainable parameter
    (a criterion holding only an EMA copy) is not wrapped, and CPU DDP gets no device_ids."""
    if not any(p.requires_grad for p in model.parameters()):
        # Nothing to synchronise: every rank updates such state identically from the
        # (synchronised) student. fairseq skips the .to(device) it leaves to the wrapper.
        return model.to(device)
    if device.type == "cpu" and not args.tpu and args.ddp_backend in ("c10d", "pytorch_ddp"):
        from fairseq.distributed import ModuleProxyWrapper
        from torch.nn.parallel import DistributedDataParallel

        with warnings.catch_warnings():  # fairseq's option, kept with its exact meaning
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.* is deprecated",
                                    category=FutureWarning)
            ddp = DistributedDataParallel(
                module=model.to(device), device_ids=None, output_device=None,
                broadcast_buffers=args.broadcast_buffers, bucket_cap_mb=args.bucket_cap_mb,
                process_group=process_group,
                find_unused_parameters=args.find_unused_parameters,
                gradient_as_bucket_view=args.gradient_as_bucket_view,
            )
        return ModuleProxyWrapper(ddp)
    return original(args, model, process_group, device)


def all_gather_list(original: Callable[..., Any], data: Any, group: Any = None,
                    max_size: int = 16384) -> List[Any]:
    """fairseq's ``all_gather_list`` (CUDA buffers) through ``all_gather_object`` on gloo."""
    from fairseq import utils
    from fairseq.distributed import utils as distributed_utils

    if group is None:
        group = distributed_utils.get_global_group()
    if torch.cuda.is_available() and dist.get_backend(group) != "gloo":
        return original(data, group=group, max_size=max_size)
    out: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, utils.move_to_cpu(data), group=group)
    return out


def broadcast_object_slow(original: Callable[..., Any], obj: Any, src_rank: int, group: Any,
                          dist_device: torch.device) -> Any:
    """fairseq's ``_broadcast_object_slow`` (pickled objects from rank 0, e.g. the checkpoint
    state a resumed run loads on rank 0 and sends to the others), whose receivers unpickle
    with torch >= 2.6's ``weights_only`` default and so refuse the omegaconf config fairseq's
    loader puts into that state: every resumed multi-process run failed. These bytes are not
    a file: rank 0 of this job serialised them an instant before, from a checkpoint it read
    with safe loading, so the receivers unpickle them in full."""
    import io

    from fairseq.distributed import utils as distributed_utils

    if distributed_utils.get_rank(group) == src_rank:
        return original(obj, src_rank, group, dist_device)
    length = torch.LongTensor([0]).to(dist_device)
    distributed_utils.broadcast(length, src=src_rank, group=group)
    buffer = torch.ByteTensor(int(length.item())).to(dist_device)
    distributed_utils.broadcast(buffer, src=src_rank, group=group)
    return torch.load(io.BytesIO(buffer.cpu().numpy()), map_location="cpu", weights_only=False)


def install() -> None:
    """Patches fairseq's launcher, DDP wrapper, ``all_gather_list`` and the receiving side of
    its object broadcast (idempotent)."""
    from fairseq import models
    from fairseq.distributed import utils as distributed_utils

    from fairseq_crild.patches.patching import calling, patch_once

    for module, name, replacement, why in (
            (distributed_utils, "call_main", call_main, "CPU (gloo) launches"),
            (distributed_utils, "all_gather_list", all_gather_list, "gather on gloo"),
            (distributed_utils, "_broadcast_object_slow", broadcast_object_slow,
             "receive broadcast objects on the CPU"),
            (models, "DistributedFairseqModel", wrap_model,
             "no DDP around a criterion without trainable parameters")):
        patch_once(module, name, calling(replacement), why)
