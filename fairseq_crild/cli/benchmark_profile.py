"""``crild-benchmark --profile VARIANT``: where a training step's time goes, per op class.

The step is the benchmark's own (:func:`fairseq_crild.cli.benchmark.build_variants`: the real
task, criterion and batches), plus one Adam update of the student (fairseq's ``adam``, as
the ``adam_update`` variant; the bf16 runs update the bf16 weights in place, without the
fp32 master copy fairseq's trainer keeps). ``torch.profiler`` records ``--steps`` steps after
``--warmup`` untimed ones; every op's *self* CPU time (its own time, children excluded, so
the classes add up to the profiled wall time) goes to one class:

GEMM (addmm/mm/bmm/matmul/linear: the layers' products), attention (everything
``scaled_dot_product_attention`` runs, forward and backward: the fused kernel, or on the
CPU in training, where attention dropout rules the fused kernel out, the math path's
products, mask and softmax), softmax (outside attention and the losses), LayerNorm/GELU,
relation KL / loss (every op of the ILD distances and of the consistency term, their
relation products included), mixup (mixing the embedding output and the padding mask),
casts (``aten::to`` / ``_to_copy`` / the ``copy_`` they run), optimizer (the Adam update,
its casts included), dropout (the masks' random draws and products, attention dropout
included), other.

The scopes come from the op tree: ``record_function`` ranges put around the criterion's
distance, consistency and mixup functions while profiling (patched in, then restored), and
the ``aten::scaled_dot_product_attention`` and ``aten::dropout`` calls; the innermost wins,
and a backward op inherits the scope of the forward op that made its autograd node (same
sequence number). :func:`classify_op` is the pure part: (op name, parent op, scope) ->
class. The profiler adds a few microseconds per op, so the small-op classes read a little
high; a loaded machine inflates every class alike, so read shares, not milliseconds.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

#: op classes in table order
CLASSES = ("GEMM", "attention", "softmax", "LayerNorm/GELU", "relation KL / loss", "mixup",
           "casts", "optimizer", "dropout", "other")
#: record_function ranges the profiler patches in: prefix + scope
SCOPE_PREFIX = "crild::"
SCOPE_CLASS = {"loss": "relation KL / loss", "mixup": "mixup", "optimizer": "optimizer",
               "attention": "attention", "dropout": "dropout"}
#: ops whose whole subtree is one scope
ROOT_SCOPES = {"aten::scaled_dot_product_attention": "attention", "aten::dropout": "dropout",
               "aten::native_dropout": "dropout", "aten::feature_dropout": "dropout"}
CAST_OPS = ("aten::to", "aten::_to_copy")
_GEMM = ("addmm", "aten::mm", "aten::bmm", "baddbmm", "matmul", "aten::linear", "addmv",
         "aten::mv", "aten::dot", "mmbackward", "bmmbackward", "mkldnn_linear",
         "mkldnn_matmul", "mkl_linear", "linearbackward")
_ATTENTION = ("scaled_dot_product", "scaleddotproduct", "flash_attention", "flashattention",
              "efficient_attention", "efficientattention")
_NORM_ACT = ("layer_norm", "layernorm", "gelu")


def classify_op(name: str, parent: str = "", scope: str = "") -> str:
    """The class of one profiled op: ``name`` its event name (``aten::addmm``,
    ``AddmmBackward0``, ...), ``parent`` the name of the op that called it ("" at top
    level), ``scope`` the innermost scope it ran in ("loss", "mixup", "optimizer" from the
    criterion's ranges, "attention", "dropout" from the ops above it, or "").

    Precedence: the optimizer scope (its casts are the update's), then casts (``copy_``
    counts as a cast when a cast runs it, or from Python directly), then the other scopes,
    then the op's own name; any other ``copy_`` is its caller's (addmm's bias copy is GEMM
    work, a ``clone``'s is other)."""
    if scope == "optimizer":
        return "optimizer"
    if name in CAST_OPS or (name == "aten::copy_" and (not parent or parent in CAST_OPS)):
        return "casts"
    if scope in SCOPE_CLASS:
        return SCOPE_CLASS[scope]
    if name == "aten::copy_":
        return classify_op(parent)
    low = name.lower()
    if any(k in low for k in _ATTENTION):
        return "attention"
    if any(k in low for k in _GEMM):
        return "GEMM"
    if "softmax" in low:
        return "softmax"
    if any(k in low for k in _NORM_ACT):
        return "LayerNorm/GELU"
    if "adam" in low or "_foreach" in low:
        return "optimizer"
    if "bernoulli" in low or "dropout" in low:
        return "dropout"
    return "other"


# --------------------------------------------------------------------------- scopes


def _scoped(scope: str, fn):
    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(SCOPE_PREFIX + scope):
            return fn(*args, **kwargs)
    return wrapped


@contextlib.contextmanager
def criterion_scopes() -> Iterator[None]:
    """``record_function`` ranges around the ILD distance, the consistency term and mixup,
    for the profile only (the attributes are restored on exit)."""
    from fairseq_crild.criterions import consistency
    from fairseq_crild.criterions.ild_distance import IldDistance
    from fairseq_crild.models.requests import MixupSpec

    patches = [(IldDistance, "__call__", "loss"),
               (consistency, "consistency_term", "loss"),
               (MixupSpec, "apply", "mixup"),
               (consistency, "draw_mixup", "mixup")]
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in patches]
    try:
        for owner, attr, scope in patches:
            setattr(owner, attr, _scoped(scope, owner.__dict__[attr]))
        yield
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


# --------------------------------------------------------------------------- aggregation


def _scope_of(event, seq_scope: Dict[int, str]) -> str:
    """The innermost scope at ``event`` (itself included): a criterion range or a root op
    (:data:`ROOT_SCOPES`); for a backward op the scope of the forward op that made its
    autograd node."""
    node = event
    while node is not None:
        name = node.name
        if name.startswith(SCOPE_PREFIX):
            return name[len(SCOPE_PREFIX):]
        if name in ROOT_SCOPES:
            return ROOT_SCOPES[name]
        if name.startswith("autograd::engine::evaluate_function:"):
            return seq_scope.get(node.sequence_nr, "")
        node = node.cpu_parent
    return ""


def aggregate(events: List[Any]) -> Tuple[Dict[str, float], Dict[Tuple[str, str], float]]:
    """Self CPU microseconds per class of profiler ``events`` (``prof.events()``), and per
    (class, op name); a scope range's own self time (Python between its ops) goes to the
    scope's class."""
    seq_scope: Dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::"):
            scope = _scope_of(e, {})
            if scope:
                seq_scope.setdefault(e.sequence_nr, scope)
    out = {c: 0.0 for c in CLASSES}
    by_op: Dict[Tuple[str, str], float] = {}
    for e in events:
        parent = e.cpu_parent.name if e.cpu_parent is not None else ""
        if e.name.startswith(SCOPE_PREFIX):
            cls = SCOPE_CLASS.get(e.name[len(SCOPE_PREFIX):], "other")
        else:
            cls = classify_op(e.name, parent, _scope_of(e, seq_scope))
        out[cls] += float(e.self_cpu_time_total)
        by_op[(cls, e.name)] = by_op.get((cls, e.name), 0.0) + float(e.self_cpu_time_total)
    return out, by_op


def profile_step(step, batches: List[Dict[str, Any]], optimizer_step, warmup: int,
                 steps: int, top_ops: int = 40) -> Dict[str, Any]:
    """Per class: self CPU ms per step and share, over ``steps`` steps (cycling
    ``batches``) after ``warmup`` unprofiled ones; plus the ``top_ops`` costliest
    (class, op) pairs."""
    from torch.profiler import ProfilerActivity, profile

    def one(i: int) -> None:
        step(batches[i % len(batches)])
        if optimizer_step is not None:
            with torch.profiler.record_function(SCOPE_PREFIX + "optimizer"):
                optimizer_step()

    with criterion_scopes():
        for i in range(warmup):
            one(i)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                one(warmup + i)
    per_class, by_op = aggregate(list(prof.events()))
    total = sum(per_class.values())
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:top_ops]
    return {"steps": steps, "total_ms_per_step": total / 1000 / steps,
            "classes": {c: {"ms_per_step": us / 1000 / steps,
                            "share": us / total if total else 0.0}
                        for c, us in per_class.items()},
            "top_ops": [{"class": c, "op": n, "ms_per_step": us / 1000 / steps}
                        for (c, n), us in top]}


def adam_over(trainees) -> Any:
    """One fairseq Adam over every trainee's trainable parameters (those without a
    gradient, i.e. the other trainees' once their gradients are cleared, are skipped by the
    update)."""
    from fairseq import optim

    first = next(iter(trainees))
    params = [p for t in trainees for m in (t.model, t.criterion)
              for p in m.parameters() if p.requires_grad]
    return optim.build_optimizer(first.cfg.optimizer, params).step


def run_profile(benches, timed, args) -> Dict[str, Any]:
    """``--profile VARIANT[,VARIANT]`` at each of ``--precisions``: each variant's step
    (``timed``, from the benchmark's own builder, which passes them in: this module does not
    import the benchmark), then one Adam update, profiled per op class (one after the other,
    in the benchmark's variant order)."""
    out: Dict[str, Any] = {}
    for key, t in timed.items():
        bench = benches[t.precision]
        optimizer_step: Optional[Any] = None
        if t.name.endswith("_step"):
            trainees = list(bench.trainees.values())
            for trainee in trainees:  # another variant's gradients would be updated too
                for m in (trainee.model, trainee.criterion):
                    for p in m.parameters():
                        p.grad = None
            optimizer_step = adam_over(trainees)
        out[key] = {"variant": t.name, "precision": t.precision,
                    **profile_step(t.step, t.batches, optimizer_step, max(args.warmup, 1),
                                   args.steps)}
        # what the update moved: the parameters the step gave gradients
        out[key]["optimizer_params"] = sum(
            p.numel() for trainee in bench.trainees.values()
            for m in (trainee.model, trainee.criterion) for p in m.parameters()
            if p.grad is not None)
    return out


def format_profile(result: Dict[str, Any]) -> str:
    """The per-class table: one column pair (ms/step, share) per profiled precision."""
    keys = list(result)
    names = {result[k]["variant"] for k in keys if "variant" in result[k]}

    def column(k: str) -> str:
        row = result[k]
        return row["precision"] if len(names) <= 1 else f"{row['variant']} {row['precision']}"
    head = "| op class | " + " | ".join(f"{column(k)} ms/step | share" for k in keys) + " |"
    lines = [f"profile of {', '.join(keys)}: self CPU time per step (torch.profiler; "
             f"{result[keys[0]]['steps']} steps)", "", head,
             "|---|" + "---|---|" * len(keys)]
    for c in CLASSES:
        cells = " | ".join(f"{result[k]['classes'][c]['ms_per_step']:.1f} | "
                           f"{100 * result[k]['classes'][c]['share']:.1f}%" for k in keys)
        lines.append(f"| {c} | {cells} |")
    total = " | ".join(f"{result[k]['total_ms_per_step']:.1f} | 100%" for k in keys)
    lines.append(f"| total | {total} |")
    return "\n".join(lines)
