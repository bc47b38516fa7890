"""Data-parallel training on CPU through fairseq's own paths (torch.distributed, gloo).

Two simulated nodes on loopback (two ``torchrun --nnodes 2`` processes, gloo, env://,
pytorch_ddp) and fairseq's own ``--distributed-world-size 2`` (the plugin forks the
processes; legacy_ddp; resuming the torchrun run half-way) must train exactly like one
process that sees the same global batch: 2 ranks x 4 examples against 1 process x 4
examples x ``--update-freq 2``. fairseq shards batches round-robin and groups
``--update-freq`` consecutive ones, so update k sees the same 8 examples in all set-ups.

The run is CR-ILD with everything that lives in the criterion: a learned projection (the
student is narrower than the teacher: DDP-wrapped, gradients averaged over ranks), an EMA
copy of the student (frozen, updated identically on every rank), mixup (draws seeded by the
batch's position in the global batch, see distributed.batch_generator) and the consistency
ramp-up. Dropout is off, so nothing else is random. The logged loss is rank 0's aggregate
over both ranks: equal to the 1-process loss only if metrics are summed over ranks.

Tolerance: the set-ups do the same float32 arithmetic except for the gradient reduction (one
process accumulates its two micro-batch gradients in place; DDP sums the two ranks'
gradients in gloo and divides by 2, then fairseq multiplies by 2 / sample size) and the
order in which logging outputs are summed: a few roundings of ~6e-8 relative per update,
which Adam (steps of ~lr whatever a gradient's scale) can turn into differences of a few
1e-7 on near-zero gradients over 4 updates. We allow 1e-5 relative + 1e-6 absolute on every
parameter after every update: 10x above that noise, 1000x below lr = 1e-3, the size of one
wrong Adam step. (Measured here: bitwise identical, max |diff| 0, for both launchers; more
ranks or another BLAS may reorder sums.) Losses are compared at the 4 decimals fairseq logs
(|diff| <= 1e-4: one unit in the last printed place, which a 1e-7 difference can flip).
"""

import os
import re
import shutil
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from fairseq_crild.patches.distributed import free_port, resolve_cpu_launch
from tests.conftest import ROOT, run_script
from tests.test_errors_distill import write_teacher

BIN = os.path.dirname(sys.executable)
UPDATES = 4
RESUME_AT = 2
ARGS = ["--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu", "--num-workers", "0",
        "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed",
        "--global-batch-size", "8", "--max-positions", "64", "--log-format", "simple",
        "--log-interval", "1", "--seed", "3", "--dropout", "0", "--attention-dropout", "0",
        "--arch", "bert", "--encoder-layers", "2", "--encoder-embed-dim", "16",
        "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "32",
        "--max-position-embeddings", "128", "--criterion", "cr_ild", "--ild-preset", "cr_ild",
        "--ild-objects", "qkv,hidden", "--num-relation-heads", "4",
        "--consistency-on-relations", "--consistency-target", "ema", "--ema-decay", "0.9",
        "--max-update", str(UPDATES), "--disable-validation", "--no-epoch-checkpoints",
        "--save-interval-updates", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same GEMM kernels and order in every process


def parse_losses(log: str):
    """{num_updates: loss} of the train_inner lines (rank 0 prints the aggregated values)."""
    out = {}
    for line in log.splitlines():
        if "| train_inner |" not in line:
            continue
        fields = dict(kv.split("=", 1) for kv in re.findall(r"\w+=[^,\s]+", line))
        out[int(fields["num_updates"])] = float(fields["loss"])
    return out


def states(save_dir, updates):
    """(model, criterion) state dicts after each update (checkpoint_1_<update>.pt)."""
    out = {}
    for u in updates:
        ckpt = torch.load(save_dir / f"checkpoint_1_{u}.pt", map_location="cpu")
        out[u] = (ckpt["model"], ckpt["criterion"])
    return out


def assert_same_training(ref_dir, other_dir, ref_log, other_log, first=1):
    """Same parameters (model and criterion) after each update from ``first`` on, same
    logged losses."""
    updates = list(range(first, UPDATES + 1))
    ref, other = states(ref_dir, updates), states(other_dir, updates)
    for u in updates:
        for a, b in zip(ref[u], other[u]):
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6,
                                           msg=lambda m, k=k, u=u: f"{k} after update {u}: {m}")
    la, lb = parse_losses(ref_log), parse_losses(other_log)
    assert sorted(lb) == updates and set(updates) <= set(la)
    for u in updates:
        assert abs(la[u] - lb[u]) <= 1e-4, (u, la[u], lb[u])


def torchrun_two_nodes(args, dirs):
    """Two torchrun launches on loopback, as on two machines: --nnodes 2, one process each,
    node 0 hosting the rendezvous; each node gets its own save dir. Returns their logs."""
    port = free_port()
    procs = [subprocess.Popen(
        [os.path.join(BIN, "torchrun"), "--nnodes", "2", "--node_rank", str(rank),
         "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
         os.path.join(BIN, "fairseq-train"), *args, "--save-dir", str(dirs[rank])],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return logs


@pytest.fixture(scope="module")
def runs(tiny_env, tmp_path_factory):
    """The reference and both distributed launches, run side by side (saves wall time)."""
    base = tmp_path_factory.mktemp("distributed")
    teacher = write_teacher(tiny_env, base / "teacher.pt")
    args = [str(tiny_env["data"]), *ARGS, "--teacher-path", teacher]
    dirs = {"single": base / "single", "node0": base / "node0", "node1": base / "node1",
            "spawn": base / "spawn"}

    def fairseq_train(*extra):
        out = run_script("-m", "fairseq_cli.train", *args, *extra, env=ENV, timeout=150)
        return out.stdout + out.stderr

    def torchrun_then_spawn():
        torchrun = torchrun_two_nodes(args, [dirs["node0"], dirs["node1"]])
        # the spawned run resumes the 2-process run after RESUME_AT updates
        dirs["spawn"].mkdir()
        shutil.copyfile(dirs["node0"] / f"checkpoint_1_{RESUME_AT}.pt",
                        dirs["spawn"] / "checkpoint_last.pt")
        spawn = fairseq_train("--distributed-world-size", "2", "--ddp-backend", "legacy_ddp",
                              "--save-dir", str(dirs["spawn"]))
        return torchrun, spawn

    with ThreadPoolExecutor(max_workers=2) as pool:
        single = pool.submit(fairseq_train, "--update-freq", "2", "--save-dir",
                             str(dirs["single"]))
        torchrun, spawn = pool.submit(torchrun_then_spawn).result()
        logs = {"single": single.result(), "torchrun": torchrun, "spawn": spawn}
    return {"dirs": dirs, "logs": logs}


def test_two_nodes_torchrun_match_one_process(runs):
    """torchrun --nnodes 2 (one process per node, env://) == one process, --update-freq 2."""
    dirs, (log0, _) = runs["dirs"], runs["logs"]["torchrun"]
    assert "distributed init (rank 0): env://" in log0
    assert "training on 2 devices" in log0
    assert_same_training(dirs["single"], dirs["node0"], runs["logs"]["single"], log0)
    # only rank 0 writes checkpoints; the teacher never enters them
    assert not dirs["node1"].exists() or not any(dirs["node1"].iterdir())
    state = torch.load(dirs["node0"] / "checkpoint_last.pt", map_location="cpu")
    assert not any("teacher" in k for k in list(state["model"]) + list(state["criterion"]))
    assert any(k.startswith("projection.") for k in state["criterion"])
    assert any(k.startswith("ema_model.") for k in state["criterion"])


def test_fairseq_world_size_flag_spawns_and_resumes_on_cpu(runs):
    """fairseq's own --distributed-world-size 2, no launcher: the plugin forks 2 processes,
    which resume the 2-process run (rank 0 loads checkpoint_last.pt and broadcasts it) and
    average gradients with fairseq's other DDP implementation, legacy_ddp."""
    log = runs["logs"]["spawn"]
    assert "training on 2 devices" in log and "distributed backend gloo" in log
    assert re.search(rf"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 1 @ {RESUME_AT} "
                     r"updates\)", log), log[-3000:]
    assert_same_training(runs["dirs"]["single"], runs["dirs"]["spawn"], runs["logs"]["single"],
                         log, first=RESUME_AT + 1)


def _dist_cfg(**dt):
    base = dict(distributed_world_size=1, distributed_init_method=None, distributed_rank=0,
                distributed_port=-1, distributed_no_spawn=False, distributed_num_procs=1,
                distributed_backend="nccl", device_id=0)
    return types.SimpleNamespace(distributed_training=types.SimpleNamespace(**{**base, **dt}))


def test_launch_inference_on_cpu():
    """How each launcher's environment maps to fairseq's distributed options."""
    cfg = _dist_cfg()
    torchrun = {"MASTER_ADDR": "h", "MASTER_PORT": "29500", "WORLD_SIZE": "4", "RANK": "3"}
    assert resolve_cpu_launch(cfg, env=torchrun) is None
    dt = cfg.distributed_training
    assert (dt.distributed_init_method, dt.distributed_world_size, dt.distributed_rank,
            dt.distributed_no_spawn, dt.distributed_backend) == ("env://", 4, 3, True, "gloo")

    cfg = _dist_cfg(distributed_port=12345)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "n[1-4]"}
    assert resolve_cpu_launch(cfg, env=slurm, master_host=lambda env: "n1") is None
    dt = cfg.distributed_training
    assert (dt.distributed_init_method, dt.distributed_world_size, dt.distributed_rank,
            dt.distributed_no_spawn) == ("tcp://n1:12345", 8, 5, True)

    cfg = _dist_cfg(distributed_world_size=3)  # one node, no launcher: fork 3 processes
    assert resolve_cpu_launch(cfg, env={}) == 3
    assert cfg.distributed_training.distributed_init_method.startswith("tcp://localhost:")

    cfg = _dist_cfg(distributed_world_size=4, distributed_init_method="tcp://m:1",
                    distributed_rank=2, distributed_num_procs=2)  # node 2 of 2 x 2
    assert resolve_cpu_launch(cfg, env={}) == 2

    cfg = _dist_cfg(distributed_world_size=2)
    with pytest.raises(ValueError, match="disagrees with torchrun's WORLD_SIZE"):
        resolve_cpu_launch(cfg, env=torchrun)


def test_ddp_wrapping_on_cpu():
    """A module without trainable parameters (a criterion holding only an EMA copy) is left
    unwrapped, where PyTorch's DDP would refuse it; CPU DDP gets no device_ids; logging
    outputs are gathered without CUDA."""
    import torch.distributed as dist
    from fairseq import models
    from torch.nn.parallel import DistributedDataParallel

    import fairseq_crild  # noqa: F401  (installs the wrapper)

    args = types.SimpleNamespace(tpu=False, ddp_backend="pytorch_ddp", broadcast_buffers=False,
                                 bucket_cap_mb=25, find_unused_parameters=False,
                                 gradient_as_bucket_view=False)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        frozen = torch.nn.Linear(2, 2).requires_grad_(False)
        assert models.DistributedFairseqModel(args, frozen, None, torch.device("cpu")) is frozen
        trainable = torch.nn.Linear(2, 2)
        wrapped = models.DistributedFairseqModel(args, trainable, None, torch.device("cpu"))
        assert isinstance(wrapped.module, DistributedDataParallel)
        assert wrapped.module.device_ids is None and wrapped.weight is trainable.weight
        wrapped(torch.ones(1, 2)).sum().backward()
        assert trainable.weight.grad is not None
        # fairseq's all_gather_list (non-summable logging outputs, e.g. STS-B predictions)
        # allocates CUDA buffers; on gloo it goes through all_gather_object
        from fairseq.distributed import utils as distributed_utils

        logs = {"predictions": torch.arange(3.0)}
        gathered = distributed_utils.all_gather_list(logs)
        assert len(gathered) == 1 and torch.equal(gathered[0]["predictions"], torch.arange(3.0))
    finally:
        dist.destroy_process_group()
