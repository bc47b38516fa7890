"""The pipeline's report: report.json, report.md and a PNG of dev metrics over updates."""

import json
import os
import statistics
import time
from typing import Any, Dict, List, Optional

import torch

from fairseq_crild.pipeline.runner import best_eval, parse_log


def count_parameters(checkpoint: str) -> int:
    state = torch.load(checkpoint, map_location="cpu", mmap=True)
    return int(sum(v.numel() for v in state["model"].values()))


def stage_metrics(log_path: str, metric: str, metric_names: List[str]) -> Dict[str, Any]:
    records = parse_log(log_path)
    best = best_eval(records, metric)
    curve = [(r.get("valid_num_updates"), r.get(f"valid_{metric}")) for r in records]
    return {
        "best": None if best is None else best[f"valid_{metric}"],
        "metrics": {} if best is None else {m: best.get(f"valid_{m}") for m in metric_names
                                            if f"valid_{m}" in best},
        "best_num_updates": None if best is None else best.get("valid_num_updates"),
        "curve": curve,
    }


@torch.inference_mode()
def inference_speed(data: str, checkpoints: Dict[str, str], max_len: int, n: int = 64,
                    repeats: int = 3, batch_size: int = 32, latency_examples: int = 32
                    ) -> Dict[str, Any]:
    """CPU inference cost of each model on the same real dev examples.

    What deployment asks of a distilled student: latency of one request (batch 1, median ms
    over ``latency_examples`` single examples x ``repeats``) and throughput of a full batch
    (``batch_size``, examples/s, median of ``repeats`` passes over ``n`` examples). Models are
    measured in turns within each repeat, so background load hits them alike; the CPU thread
    count is recorded because both figures depend on it.
    """
    from fairseq_crild.models.loading import load_bert
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    task = DistillGlueTask.setup_task(DistillGlueConfig(data=data, max_positions=max_len))
    task.load_dataset("valid")
    ds = task.dataset("valid")
    idx = list(range(min(n, len(ds))))
    batches = [ds.collater([ds[i] for i in idx[s:s + batch_size]])
               for s in range(0, len(idx), batch_size)]
    singles = [ds.collater([ds[i]]) for i in idx[:latency_examples]]
    head = task.cfg.classification_head_name
    models = {}
    for name, path in checkpoints.items():
        model, _ = load_bert(path, task.dictionary)
        models[name] = model.eval()
        for b in batches[:1] + singles[:3]:  # warm-up
            model(**b["net_input"], classification_head_name=head)
    latencies: Dict[str, List[float]] = {name: [] for name in models}
    passes: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            for b in singles:
                start = time.perf_counter()
                model(**b["net_input"], classification_head_name=head)
                latencies[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            for b in batches:
                model(**b["net_input"], classification_head_name=head)
            passes[name].append(time.perf_counter() - start)
    out: Dict[str, Any] = {
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "device": "cpu", "torch": torch.__version__, "examples": len(idx),
        "batch_size": batch_size, "latency_examples": len(singles), "repeats": repeats,
        "max_len": max_len,
    }
    for name in models:
        lat = sorted(latencies[name])
        out[f"{name}_latency_ms"] = 1000 * statistics.median(lat)
        out[f"{name}_latency_ms_p90"] = 1000 * lat[min(len(lat) - 1, int(0.9 * len(lat)))]
        out[f"{name}_examples_per_s"] = len(idx) / statistics.median(passes[name])
    if "teacher_examples_per_s" in out and "student_examples_per_s" in out:
        out["speedup"] = out["student_examples_per_s"] / out["teacher_examples_per_s"]
        out["latency_speedup"] = out["teacher_latency_ms"] / out["student_latency_ms"]
    return out


def train_loss_curve(log_path: str) -> List[tuple]:
    """(update, training loss) of a stage's fairseq log: the only curve of an ILD stage, which
    has no head to evaluate on dev."""
    curve = []
    for r in parse_log(log_path, "train_inner"):
        update = r.get("train_inner_num_updates", r.get("num_updates"))
        loss = r.get("train_inner_loss", r.get("loss"))
        if isinstance(update, float) and isinstance(loss, float):
            curve.append((update, loss))
    return curve


def _draw(ax, curves: Dict[str, list], ylabel: str) -> None:
    for name, curve in curves.items():
        pts = [(u, v) for u, v in curve if u is not None and v is not None]
        if pts:
            ax.plot([u for u, _ in pts], [v for _, v in pts], marker="o", ms=3, label=name)
    ax.set_xlabel("updates")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_curves(curves: Dict[str, list], metric: str, path: str,
                loss_curves: Optional[Dict[str, list]] = None) -> None:
    """Dev ``metric`` over updates of every evaluated stage (teacher, stage 2), and beside it
    the training loss of stages without dev evaluation (stage 1), if any."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = {k: v for k, v in (loss_curves or {}).items() if v}
    fig, axes = plt.subplots(1, 2 if losses else 1, figsize=(11 if losses else 6, 3.5),
                             squeeze=False)
    _draw(axes[0][0], curves, f"dev {metric}")
    if losses:
        _draw(axes[0][1], losses, "training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: str, report: Dict[str, Any], curves: Dict[str, list],
                 loss_curves: Optional[Dict[str, list]] = None) -> str:
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    plot_curves(curves, report["metric"], os.path.join(out_dir, "dev_curve.png"), loss_curves)
    md = render_markdown(report)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return md


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_markdown(r: Dict[str, Any]) -> str:
    inf = r.get("inference", {})
    rows = [
        ("dev " + r["metric"] + " (best eval)", _fmt(r["teacher_dev"]), _fmt(r["student_dev"])),
        *[(f"dev {m}", _fmt(r["teacher_metrics"].get(m)), _fmt(r["student_metrics"].get(m)))
          for m in r["metric_names"] if m != r["metric"]],
        ("parameters (M)", _fmt(r["params"]["teacher"] / 1e6), _fmt(r["params"]["student"] / 1e6)),
        ("latency, batch 1 (median ms, CPU, %s threads)" % inf.get("threads", "?"),
         _fmt(inf.get("teacher_latency_ms"), 1), _fmt(inf.get("student_latency_ms"), 1)),
        ("throughput, batch %s (examples/s, CPU, %s threads)"
         % (inf.get("batch_size", 32), inf.get("threads", "?")),
         _fmt(inf.get("teacher_examples_per_s"), 1), _fmt(inf.get("student_examples_per_s"), 1)),
    ]
    lines = [f"# {r['task']} / {r['method']} / seed {r['seed']} (budget {r['budget']})", "",
             "| | teacher | student |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"Inference speed-up of the student: {_fmt(inf.get('speedup'))}x throughput "
              f"(batch {inf.get('batch_size', 32)}), {_fmt(inf.get('latency_speedup'))}x latency "
              f"(batch 1), {inf.get('threads', '?')} CPU threads, dev examples up to "
              f"{inf.get('max_len', '?')} tokens. Stage wall times (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["wall_s"].items()) + "."]
    return "\n".join(lines) + "\n"
