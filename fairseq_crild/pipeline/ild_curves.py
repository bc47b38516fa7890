"""Stage 1's ILD loss on training and on dev inputs, over the run's updates: the paper's
overfitting argument made visible (U-ILD's training ILD loss keeps falling while its dev ILD
loss and its final dev metric do not follow).

The curves come from stage 1's fairseq log of runs made with ``--ild-probe-every N``: the
``valid`` records (dev text, teacher targets, no labels needed) and the ``train_probe``
records (a fixed sample of the training inputs, evaluated the same way: eval mode, no
mixup), plus the ``train_inner`` averages (the training objective's inputs, mixed for CR-ILD).
Plain Python + numpy like :mod:`fairseq_crild.pipeline.summary`; matplotlib only in
:func:`plot`.
"""

import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from fairseq_crild.data.glue_tasks import TRAIN_PROBE
from fairseq_crild.outputs import atomic_output_file
from fairseq_crild.pipeline.runner import parse_log
from fairseq_crild.pipeline.summary import method_order
from fairseq_crild.pipeline.summary import write_json as write_json  # the same atomic JSON

Curve = List[Tuple[float, float]]
#: the curves of one run: the training windows, the training sample, dev
KINDS = ("train_inner", TRAIN_PROBE, "valid")


def stage1_curves(log_path: str, term: str = "loss_ild") -> Dict[str, Curve]:
    """(update, ``term``) of each record kind in a stage-1 log (kinds without records are
    left out); a later record at the same update (fairseq's epoch-end evaluation right after
    an interval one) replaces the earlier."""
    curves: Dict[str, Curve] = {}
    for kind in KINDS:
        points: Dict[float, float] = {}
        for r in parse_log(log_path, kind):
            # fairseq's json log prefixes keys with the record kind, except train_inner's
            update = r.get(f"{kind}_num_updates", r.get("num_updates"))
            value = r.get(f"{kind}_{term}", r.get(term))
            if isinstance(update, (int, float)) and isinstance(value, (int, float)):
                points[float(update)] = float(value)
        if points:
            curves[kind] = sorted(points.items())
    return curves


#: the report.json field holding :func:`stage1_curves` of the run's stage-1 log, so the
#: curves can be re-derived from the report files alone (results/ keeps no logs)
REPORT_FIELD = "stage1_ild_curves"


def load_run_curves(reports: Sequence[Dict[str, Any]],
                    term: str = "loss_ild") -> Dict[str, Dict[int, Dict[str, Curve]]]:
    """method -> seed -> curves, for the reports (``summary.load_reports``) whose stage 1
    logged dev evaluations; methods without stage 1 or without probes are left out. The
    ``loss_ild`` curves come from the report's own copy where it has one, else from the
    stage-1 log next to it."""
    out: Dict[str, Dict[int, Dict[str, Curve]]] = {}
    for r in reports:
        stored = r.get(REPORT_FIELD) if term == "loss_ild" else None
        if stored:
            curves = {k: [(float(u), float(v)) for u, v in c] for k, c in stored.items()}
        else:
            log = os.path.join(os.path.dirname(r["_file"]), "stage1", "train.log")
            curves = stage1_curves(log, term)
        if "valid" in curves and TRAIN_PROBE in curves:
            out.setdefault(r["method"], {})[int(r["seed"])] = curves
    return out


def _change(curve: Curve) -> float:
    """Last minus first value: negative when the loss fell over the run."""
    return curve[-1][1] - curve[0][1]


def summarize_curves(runs: Dict[str, Dict[int, Dict[str, Curve]]],
                     reports: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per method, over seeds: the change of the ILD loss from the first to the last
    evaluation on the training sample and on dev, the dev loss's minimum and where it lies,
    the last train/dev gap, and the final dev metric after stage 2 (from the reports)."""
    final = {(r["method"], int(r["seed"])): float(r["student_dev"]) for r in reports}
    methods: Dict[str, Any] = {}
    for method in method_order(list(runs)):
        seeds = runs[method]
        rows = {}
        for seed, c in sorted(seeds.items()):
            dev, probe = c["valid"], c[TRAIN_PROBE]
            best = min(dev, key=lambda p: p[1])
            rows[seed] = {
                "train_change": _change(probe), "dev_change": _change(dev),
                "dev_min": best[1], "dev_min_update": best[0], "last_update": dev[-1][0],
                "dev_rise_after_min": dev[-1][1] - best[1],
                "last_gap": dev[-1][1] - probe[-1][1],
                "final_dev_metric": final.get((method, seed)),
            }
        keys = ("train_change", "dev_change", "dev_rise_after_min", "last_gap",
                "final_dev_metric")
        means = {k: float(np.mean([v[k] for v in rows.values() if v[k] is not None]))
                 for k in keys if any(v[k] is not None for v in rows.values())}
        methods[method] = {"seeds": rows, "mean": means, "curves": seeds}
    return {"methods": methods}


def plot(result: Dict[str, Any], path: str, title: str = "") -> str:
    """One panel per method: the ILD loss on the training sample and on dev along stage 1,
    one thin line per seed and the mean over seeds in bold."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(result["methods"])
    if not methods:
        raise ValueError("no run logged stage-1 probes (run with --ild-probe-every N)")
    cols = min(4, len(methods))  # wrapped, so variant runs' long names stay readable
    rows = -(-len(methods) // cols)
    fig = Figure(figsize=(4.0 * cols, 3.6 * rows))
    FigureCanvasAgg(fig)
    for i, method in enumerate(methods):
        ax = fig.add_subplot(rows, cols, i + 1)
        seeds = result["methods"][method]["curves"]
        for kind, color, label in ((TRAIN_PROBE, "C0", "training inputs"),
                                   ("valid", "C3", "dev inputs")):
            lines = [np.array(c[kind]) for c in seeds.values()]
            for line in lines:
                ax.plot(line[:, 0], line[:, 1], color=color, alpha=0.25, linewidth=0.8)
            shortest = min(len(line) for line in lines)
            mean = np.mean([line[:shortest, 1] for line in lines], axis=0)
            ax.plot(lines[0][:shortest, 0], mean, color=color, linewidth=2, label=label)
        final = result["methods"][method]["mean"].get("final_dev_metric")
        ax.set_title(method.replace("+", "\n+") + (f" (final dev {final:.2f})"
                                                   if final is not None else ""), fontsize=8)
        ax.set_xlabel("stage-1 update")
        if i == 0:
            ax.set_ylabel("ILD loss (eval mode)")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
