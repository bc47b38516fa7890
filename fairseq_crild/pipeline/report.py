"""The pipeline's report: report.json, report.md and a PNG of dev metrics over updates."""

import json
import os
import statistics
import time
from typing import Any, Dict, List, Optional

import torch

from fairseq_crild.data.inference import batched, head_forward, predict_logits
from fairseq_crild.models.loading import read_checkpoint
from fairseq_crild.pipeline import dev_analysis as dev
from fairseq_crild.pipeline.runner import best_eval, parse_lines, parse_log


def count_parameters(checkpoint: str) -> int:
    """Parameters of the model as saved (safe reading, see checkpoint_safety)."""
    return int(sum(v.numel() for v in read_checkpoint(checkpoint)["model"].values()))


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


def _dev_task(data: str, max_len: int):
    """The task over ``data`` with its binarised dev split loaded, truncated at ``max_len``
    (the stages' --max-positions), as the dev evaluations saw it."""
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    task = DistillGlueTask.setup_task(DistillGlueConfig(data=data, max_positions=max_len))
    task.load_dataset("valid")
    return task


def _load_models(task, checkpoints: Dict[str, str]) -> Dict[str, Any]:
    from fairseq_crild.models.loading import load_bert

    return {name: load_bert(path, task.dictionary)[0].eval()
            for name, path in checkpoints.items()}


def _forward(model, batch: Dict[str, Any], head: str) -> torch.Tensor:
    """The forward pass the report times: the call :func:`dev_outputs` makes through
    :func:`fairseq_crild.data.inference.head_forward`."""
    return model(**batch["net_input"], classification_head_name=head)[0]


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
    task = _dev_task(data, max_len)
    ds = task.dataset("valid")
    idx = list(range(min(n, len(ds))))
    batches = list(batched(ds, batch_size, idx))
    singles = list(batched(ds, 1, idx[:latency_examples]))
    head = task.cfg.classification_head_name
    models = _load_models(task, checkpoints)
    for model in models.values():
        for b in batches[:1] + singles[:3]:  # warm-up
            _forward(model, b, head)
    latencies: Dict[str, List[float]] = {name: [] for name in models}
    passes: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            for b in singles:
                start = time.perf_counter()
                _forward(model, b, head)
                latencies[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            for b in batches:
                _forward(model, b, head)
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


@torch.inference_mode()
def dev_outputs(data: str, checkpoints: Dict[str, str], max_len: int, batch_size: int = 64
                ) -> Dict[str, Any]:
    """Every dev example's label and each checkpoint's prediction (class index, or score for
    regression), in dev order, from the binarised dev split at ``max_len`` tokens: what the
    stages' dev evaluations saw, recomputed from the checkpoint files the report names."""
    task = _dev_task(data, max_len)
    ds = task.dataset("valid")
    head = task.cfg.classification_head_name
    models = _load_models(task, checkpoints)
    targets: List[Any] = []
    for batch in batched(ds, batch_size):  # dev order, shared by all
        if "target" not in batch:
            raise ValueError(f"{data}: the dev split has no labels; the report needs them")
        targets += batch["target"].view(-1).tolist()
    preds: Dict[str, List[Any]] = {}
    for name, model in models.items():
        out = predict_logits(head_forward(model, head), ds, batch_size)
        preds[name] = (out.view(-1).tolist() if task.regression
                       else out.argmax(-1).tolist()) if len(ds) else []
    return {"targets": targets, "predictions": preds, "regression": bool(task.regression),
            "num_classes": int(task.num_classes), "label_names": list(task.label_names or [])}


def distilled_teacher_dev(teacher: str, logged: Dict[str, Any], dev_fields: Dict[str, Any],
                          metric: str, names: List[str]) -> Dict[str, Any]:
    """The report's teacher figures: those of the checkpoint the students distil. For
    ``checkpoint_best.pt`` that is the best logged evaluation (``logged``: its
    :func:`stage_metrics`); for any other checkpoint (label noise keeps
    ``checkpoint_last.pt``; a teacher brought along) the report's own dev pass measured it
    (``dev_fields``: :func:`dev_summary`), and the best logged evaluation, which the students
    never saw, stays as ``teacher_best_dev``."""
    measured = dev_fields.get("checkpoint_metrics", {}).get("teacher")
    if os.path.basename(teacher) == "checkpoint_best.pt" or not measured:
        return {"teacher_dev": logged["best"], "teacher_metrics": logged["metrics"]}
    return {"teacher_dev": round(measured[metric], 2),
            "teacher_metrics": {m: round(measured[m], 2) for m in names if m in measured},
            "teacher_best_dev": logged["best"]}


def dev_summary(outputs: Dict[str, Any], names: List[str]) -> Dict[str, Any]:
    """The report's dev fields from :func:`dev_outputs`: every metric of each checkpoint,
    the constant baseline and (with a teacher and a student) their agreement."""
    from fairseq_crild.criterions.glue_logging import positive_class

    regression, k = outputs["regression"], outputs["num_classes"]
    positive = None if regression else positive_class(outputs["label_names"], k)
    targets = outputs["targets"]
    out: Dict[str, Any] = {
        "examples": len(targets),
        "checkpoint_metrics": {
            name: dev.task_metrics(p, targets, names, regression, k, positive)
            for name, p in outputs["predictions"].items()},
        "baseline": dev.constant_baseline(targets, names, regression, k,
                                          outputs["label_names"], positive),
        "positive_class": None if positive is None else outputs["label_names"][positive]
        if positive < len(outputs["label_names"]) else positive,
    }
    preds = outputs["predictions"]
    if "teacher" in preds and "student" in preds:
        out["agreement"] = dev.agreement(preds["teacher"], preds["student"], regression)
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


def _train_records(log_path: str) -> List[Dict[str, Any]]:
    """The log's training records (train_inner every --log-interval, train at an epoch's
    end) in the order fairseq wrote them, keys without their ``train_inner_`` / ``train_``
    prefix."""
    if not os.path.isfile(log_path):
        return []
    out = []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            for kind in ("train_inner", "train"):
                if f"| {kind} | " in line:
                    for rec in parse_lines([line], kind):
                        rec = {(k[len(kind) + 1:] if k.startswith(kind + "_") else k): v
                               for k, v in rec.items()}
                        rec["_kind"] = kind
                        out.append(rec)
                    break
    return out


def _is_loss_term(key: str) -> bool:
    return key == "loss" or key.startswith("loss_")


def last_loss_terms(log_path: str) -> Dict[str, Any]:
    """The last logged value of every loss term (``loss``, ``loss_*``, and the consistency
    weight ``w_cons`` when logged) of a stage, with the update and record it came from: the
    last record fairseq wrote (an epoch's ``train`` average, or a ``train_inner`` window)."""
    records = [r for r in _train_records(log_path) if any(_is_loss_term(k) for k in r)]
    if not records:
        return {}
    last = records[-1]
    terms = {k: v for k, v in last.items() if (_is_loss_term(k) or k == "w_cons")
             and isinstance(v, float)}
    return {"num_updates": last.get("num_updates"), "record": last["_kind"], "terms": terms}


def train_term_curves(log_path: str) -> Dict[str, List[tuple]]:
    """(update, value) of every loss term over a stage's ``train_inner`` records."""
    curves: Dict[str, List[tuple]] = {}
    for r in _train_records(log_path):
        if r["_kind"] != "train_inner" or not isinstance(r.get("num_updates"), float):
            continue
        for k, v in r.items():
            if _is_loss_term(k) and isinstance(v, float):
                curves.setdefault(k, []).append((r["num_updates"], v))
    return curves


# fairseq-train options a reader compares between stages (the rest is in the command)
HYPERPARAMETERS = (
    "criterion", "ild-preset", "temperature", "encoder-layers", "encoder-embed-dim",
    "encoder-attention-heads", "encoder-ffn-embed-dim", "classifier-activation",
    "pooler-dropout", "optimizer", "lr", "adam-betas", "adam-eps", "weight-decay", "clip-norm",
    "lr-scheduler", "warmup-updates", "total-num-update", "max-update", "max-epoch",
    "batch-size", "drop-last-train-batch", "max-positions", "seed", "best-checkpoint-metric",
    "validate-interval-updates", "train-subset-size", "label-noise", "cpu", "bf16", "fp16",
    "dropout-impl", "relation-kl-impl",
)


def parse_command(command: str) -> Dict[str, Any]:
    """``--flag value`` pairs of a fairseq-train command line (``True`` for a bare flag)."""
    tokens = command.split()
    options: Dict[str, Any] = {}
    for i, tok in enumerate(tokens):
        if tok.startswith("--"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            options[tok[2:]] = True if nxt is None or nxt.startswith("--") else nxt
    return options


def stage_command(log_path: str) -> Dict[str, Any]:
    """The exact command of a stage, from the ``# <cmd>`` line that
    :func:`~fairseq_crild.pipeline.runner.run_stage` writes first into its train.log (one
    such line per launch: a resumed stage has several; the first is reported, with the
    count), and its :data:`HYPERPARAMETERS`."""
    if not os.path.isfile(log_path):
        return {"command": None, "launches": 0, "hyperparameters": {}}
    with open(log_path, encoding="utf-8") as f:
        launches = [line[2:].strip() for line in f if line.startswith("# ")]
    if not launches:
        return {"command": None, "launches": 0, "hyperparameters": {}}
    options = parse_command(launches[0])
    return {"command": launches[0], "launches": len(launches),
            "hyperparameters": {k: options[k] for k in HYPERPARAMETERS if k in options}}


def stage_record(save_dir: str, checkpoint: str, wall_s: Optional[float]) -> Dict[str, Any]:
    """One stage of the report: where it ran, the checkpoint the next step uses, its command
    and hyper-parameters, its wall time."""
    log = os.path.join(save_dir, "train.log")
    return {"save_dir": save_dir, "checkpoint": checkpoint,
            "log": log if os.path.isfile(log) else None, "wall_s": wall_s,
            **stage_command(log)}


_LOSS_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink")


def _draw(ax, curves: Dict[str, list], ylabel: str, style: str = "-", marker: str = "o",
          colors: Optional[tuple] = None) -> None:
    for i, (name, curve) in enumerate(curves.items()):
        pts = [(u, v) for u, v in curve if u is not None and v is not None]
        if pts:
            ax.plot([u for u, _ in pts], [v for _, v in pts], style, marker=marker, ms=3,
                    label=name, color=colors[i % len(colors)] if colors else None)
    ax.set_ylabel(ylabel)


def plot_curves(panels: List[Dict[str, Any]], path: str) -> List[Dict[str, Any]]:
    """One panel per stage, each with its own axes and title: dev metric over updates (and
    the constant baseline as a dashed line) on the left axis, training loss on a right axis
    where the stage logged one; a stage without dev evaluation (stage 1) shows its loss
    terms. Returns what each drawn panel holds (title, axis labels, line labels), read back
    from the figure, for report.json and tests.

    A panel: ``{"title", "metric", "dev": {label: curve}, "baseline": (label, value) or None,
    "loss": {label: curve}}`` with curves as (update, value) lists."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    summary = []
    for ax, panel in zip(axes[0], panels):
        dev_curves = {k: v for k, v in (panel.get("dev") or {}).items() if v}
        losses = {k: v for k, v in (panel.get("loss") or {}).items() if v}
        left, right = ax, None
        if dev_curves:
            _draw(ax, dev_curves, f"dev {panel['metric']}")
            if panel.get("baseline"):
                label, value = panel["baseline"]
                ax.axhline(value, color="grey", ls="--", lw=1, label=label)
            if losses:
                right = ax.twinx()
                _draw(right, losses, "training loss", style=":", marker=".",
                      colors=_LOSS_COLORS)
                right.tick_params(axis="y", colors=_LOSS_COLORS[0])
        elif losses:
            _draw(ax, losses, "training loss")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        handles, labels = left.get_legend_handles_labels()
        if right is not None:
            h2, l2 = right.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best")
        summary.append({
            "title": ax.get_title(), "ylabel": left.get_ylabel(),
            "lines": [ln.get_label() for ln in left.get_lines()],
            "ylabel_right": None if right is None else right.get_ylabel(),
            "lines_right": [] if right is None else [ln.get_label() for ln in right.get_lines()],
        })
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return summary


def write_report(out_dir: str, report: Dict[str, Any], panels: List[Dict[str, Any]]) -> str:
    """report.json, report.md and dev_curve.png of a run; report.json records the figure's
    panels as drawn."""
    png = os.path.join(out_dir, "dev_curve.png")
    report["figure"] = {"path": png, "panels": plot_curves(panels, png)}
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    md = render_markdown(report)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return md


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _cell(v: Any) -> str:
    return "-" if v is None else "yes" if v is True else str(v).replace("|", "\\|")


def render_markdown(r: Dict[str, Any]) -> str:
    inf = r.get("inference", {})
    dev_s = r.get("dev") or {}
    base = dev_s.get("baseline") or {}
    bm = base.get("metrics", {})
    ckm = dev_s.get("checkpoint_metrics", {})
    metric = r["metric"]
    rows = [
        (f"dev {metric} (best eval, selection metric)", _fmt(bm.get(metric)),
         _fmt(r["teacher_dev"]), _fmt(r["student_dev"])),
        *[(f"dev {m} (best eval)", _fmt(bm.get(m)), _fmt(r["teacher_metrics"].get(m)),
           _fmt(r["student_metrics"].get(m))) for m in r["metric_names"] if m != metric],
        *[(f"dev {m} (checkpoint file, recomputed)", _fmt(bm.get(m)),
           _fmt(ckm.get("teacher", {}).get(m)), _fmt(ckm.get("student", {}).get(m)))
          for m in (r["metric_names"] if ckm else [])],
        ("parameters (M)", "-", _fmt(r["params"]["teacher"] / 1e6),
         _fmt(r["params"]["student"] / 1e6)),
        ("latency, batch 1 (median ms, CPU, %s threads)" % inf.get("threads", "?"), "-",
         _fmt(inf.get("teacher_latency_ms"), 1), _fmt(inf.get("student_latency_ms"), 1)),
        ("throughput, batch %s (examples/s, CPU, %s threads)"
         % (inf.get("batch_size", 32), inf.get("threads", "?")), "-",
         _fmt(inf.get("teacher_examples_per_s"), 1), _fmt(inf.get("student_examples_per_s"), 1)),
    ]
    title = f"# {r['task']} / {r['method']} / seed {r['seed']} (budget {r['budget']}"
    title += f", setting {r['setting']})" if r.get("setting") else ")"
    base_col = {"majority": f"majority class ({base.get('label')})",
                "mean": f"mean score ({base.get('label')})"}.get(base.get("kind"), "baseline")
    lines = [title, "", f"| | {base_col} | teacher | student |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    agree = dev_s.get("agreement")
    if agree:
        what = ("same predicted class, % of dev examples" if agree["kind"] == "same_class"
                else "Pearson of their scores x100")
        lines += ["", f"Teacher-student agreement on dev ({what}, {agree['examples']} "
                  f"examples): **{_fmt(agree['value'])}**."]
    if base:
        lines += ["", "Baseline: the " + (
            f"majority class of the dev labels ({base['label']}) predicted for every example"
            if base["kind"] == "majority" else
            f"mean dev score ({base['label']}) predicted for every example") + "; a constant "
            "has no correlation (MCC, Pearson, Spearman undefined, counted 0)."
            + (f" F1 is that of the positive class {dev_s['positive_class']}."
               if dev_s.get("positive_class") is not None else "")]
    lines += ["", f"Inference speed-up of the student: {_fmt(inf.get('speedup'))}x throughput "
              f"(batch {inf.get('batch_size', 32)}), {_fmt(inf.get('latency_speedup'))}x latency "
              f"(batch 1), {inf.get('threads', '?')} CPU threads, dev examples up to "
              f"{inf.get('max_len', '?')} tokens. Stage wall times (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["wall_s"].items()) + "."]
    lines += _stages_markdown(r)
    return "\n".join(lines) + "\n"


def _stages_markdown(r: Dict[str, Any]) -> List[str]:
    stages = r.get("stages") or {}
    if not stages:
        return []
    names = list(stages)
    lines = ["", "## Stages", "", "| | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    lines.append("| checkpoint | " + " | ".join(_cell(stages[n]["checkpoint"]) for n in names)
                 + " |")
    keys = [k for k in HYPERPARAMETERS if any(k in stages[n]["hyperparameters"] for n in names)]
    for k in keys:
        lines.append(f"| --{k} | " + " | ".join(_cell(stages[n]["hyperparameters"].get(k))
                                               for n in names) + " |")
    loss = r.get("stage1_loss_terms") or {}
    if loss.get("terms"):
        lines += ["", f"Stage-1 loss terms (last logged, {loss['record']} record at update "
                  f"{_fmt(loss['num_updates'], 0)}): "
                  + ", ".join(f"{k} {v:.4g}" for k, v in loss["terms"].items()) + "."]
    lines += ["", "Commands (first line of each stage's train.log):"]
    for n in names:
        st = stages[n]
        launches = st.get("launches", 0)
        note = f" (launched {launches} times: resumed)" if launches > 1 else ""
        lines += ["", f"{n}{note}:", "", "```", st.get("command") or
                  "(no train.log: a teacher given with --teacher)", "```"]
    return lines
