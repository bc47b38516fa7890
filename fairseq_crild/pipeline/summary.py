"""Method comparison over seeds from the pipeline's report.json files.

The pipeline writes one ``OUT/runs/TASK/METHOD/seedN/report.json`` per run (other settings
than full: ``OUT/runs/TASK-SETTING/...``). A single seed says little on small GLUE dev sets, so
this module compares methods the way the seeds allow: mean and sample std per method, and the
difference to a baseline *paired by seed* (the same seed draws the same data order, and under
few_sample / label_noise the same training set and teacher), with a paired t interval and a
percentile bootstrap over seeds. Both intervals are over seeds only: they say nothing about
dev-set sampling noise.

Plain Python + numpy; scipy and matplotlib are imported only where used, and the module
itself imports no fairseq or torch. Files are written through
:func:`fairseq_crild.outputs.atomic_output_file`: a kill leaves the old file or the new one.
"""

import glob
import json
import logging
import math
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from fairseq_crild.outputs import atomic_output_file
from fairseq_crild.pipeline.comparison import task_folder

# the paper's table order; methods not named here follow alphabetically
METHOD_ORDER = ("finetune", "kd", "pkd", "tinybert", "minilm", "l_ild", "cr_ild",
                "cr_ild_release", "bert_emd")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
_REQUIRED = ("task", "method", "seed", "metric", "teacher_dev", "student_dev", "wall_s")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_report(r: Any, path: str) -> None:
    """Fail on the file, not later on a KeyError far from it."""
    if not isinstance(r, dict):
        raise ValueError(f"{path}: not a report (a JSON object was expected)")
    missing = [k for k in _REQUIRED if k not in r]
    if missing:
        raise ValueError(f"{path}: malformed report, missing {', '.join(missing)}")
    if not isinstance(r["seed"], int) or isinstance(r["seed"], bool):
        raise ValueError(f"{path}: seed {r['seed']!r} is not an integer")
    for key in ("student_dev", "teacher_dev"):
        if not _is_number(r[key]):
            raise ValueError(f"{path}: {key} is {r[key]!r}, not a number (did the stage "
                             "evaluate on dev?)")
    if not isinstance(r["wall_s"], dict) or not all(
            v is None or _is_number(v) for v in r["wall_s"].values()):
        raise ValueError(f"{path}: wall_s must map stage names to seconds")
    for key in ("task", "method", "metric"):
        if not isinstance(r[key], str) or not r[key]:
            raise ValueError(f"{path}: {key} {r[key]!r} is not a name")


def load_reports(out: str, task: str = "*", setting: str = "full") -> List[Dict[str, Any]]:
    """The reports of one setting under ``out``, each with ``_file`` (its path, for errors).

    ``task`` is a glob over task names. Under full the task folder has no suffix, so
    ``TASK-SETTING`` folders also match ``*``: reports are kept by their own ``setting`` field
    (missing in old reports = full), never mixed into one table.
    """
    runs = os.path.join(out, "runs")
    pattern = os.path.join(runs, task_folder(task, setting), "*", "seed*", "report.json")
    reports, seen = [], {}
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: malformed report.json ({e})") from None
        _check_report(r, path)
        if r.get("setting", "full") != setting:
            continue
        key = (r["task"], r["method"], r["seed"])
        if key in seen:
            raise ValueError(f"two reports for task {key[0]} method {key[1]} seed {key[2]}: "
                             f"{seen[key]} and {path}")
        seen[key] = path
        reports.append({**r, "_file": path})
    if not reports:
        if not os.path.isdir(out):
            raise ValueError(f"{out} is not a folder (the --out folder of crild-pipeline)")
        raise ValueError(f"no report.json for setting {setting} under {runs} "
                         f"(looked for {pattern})")
    return reports


def method_order(methods: Sequence[str]) -> List[str]:
    """The paper's order first, each method's variants (``l_ild+...``) right after it, then
    the rest alphabetically."""
    def key(m: str):
        own = variant_of(m) or m
        rank = METHOD_ORDER.index(own) if own in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, own if rank == len(METHOD_ORDER) else "", m != own, m)
    return sorted(set(methods), key=key)


def _teacher(task: str, reports: List[Dict[str, Any]], per_seed: bool) -> Dict[str, Any]:
    """The task's one teacher (full) or one teacher per seed (other settings draw the
    training set, and so train the teacher, per seed); two teachers where one belongs is an
    error, since the rows of a table would then not distil from the same model."""
    seen: Dict[Any, Dict[str, Any]] = {}
    for r in reports:
        key = r["seed"] if per_seed else None
        t = {"dev": r["teacher_dev"], "checkpoint": r.get("teacher_checkpoint")}
        if key not in seen:
            seen[key] = {**t, "_file": r.get("_file", "?")}
            continue
        s = seen[key]
        for field in ("dev", "checkpoint"):
            if s[field] != t[field]:
                where = f" seed {key}" if per_seed else ""
                raise ValueError(
                    f"task {task}{where}: two teachers in one table: teacher_{field} "
                    f"{s[field]!r} ({s['_file']}) vs {t[field]!r} ({r.get('_file', '?')})")
    if not per_seed:
        t = seen[None]
        return {"teacher_dev": t["dev"], "teacher_checkpoint": t["checkpoint"],
                "teacher_per_seed": None}
    rows = [{"seed": k, "dev": v["dev"], "checkpoint": v["checkpoint"]}
            for k, v in sorted(seen.items())]
    return {"teacher_dev": statistics.mean(x["dev"] for x in rows), "teacher_checkpoint": None,
            "teacher_per_seed": rows}


#: fewer pairs give a bootstrap interval that only restates the few values (two pairs: three
#: distinct resample means)
MIN_BOOTSTRAP_PAIRS = 3


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                      resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> Dict[str, Any]:
    """Mean of a - b (already paired by seed), a paired t interval (n - 1 dof) and a
    percentile bootstrap over the pairs; the t interval is None with fewer than two pairs, the
    bootstrap with fewer than three (two pairs have only three distinct resample means)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    out: Dict[str, Any] = {"n_pairs": n, "diff_mean": float(d.mean()) if n else None,
                           "diff_ci_low": None, "diff_ci_high": None,
                           "boot_low": None, "boot_high": None}
    if n < 2:
        return out
    from scipy import stats  # slow to import; only here

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(d) / math.sqrt(n)
    out["diff_ci_low"], out["diff_ci_high"] = out["diff_mean"] - half, out["diff_mean"] + half
    if n < MIN_BOOTSTRAP_PAIRS:
        return out
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [alpha, 100 - alpha])
    out["boot_low"], out["boot_high"] = float(low), float(high)
    return out


def _student_wall(r: Dict[str, Any]) -> Optional[float]:
    stages = [v for k, v in r["wall_s"].items() if k != "teacher" and v is not None]
    return float(sum(stages)) if stages else None


def variant_of(run_name: str) -> Optional[str]:
    """The method a run name varies (``l_ild`` for ``l_ild+ild-data=QNLI-pairs``), or None
    for a plain method: a variant is also paired with its own method on the same seeds."""
    method, plus, _ = run_name.partition("+")
    return method if plus else None


def _paired_with(runs: Dict[str, Dict[int, Dict[str, Any]]], m: str, other: str,
                 confidence: float) -> Dict[str, Any]:
    common = sorted(set(runs[m]) & set(runs.get(other, {})))
    return {"method": other, "paired_seeds": common, **paired_difference(
        [runs[m][s]["student_dev"] for s in common],
        [runs[other][s]["student_dev"] for s in common], confidence)}


def summarize(reports: Sequence[Dict[str, Any]], baseline: str = "kd",
              confidence: float = 0.95) -> Dict[str, Any]:
    """Per task and method: scores by seed, mean, std, ratio to the teacher, wall time and
    the seed-paired difference to ``baseline``. The result holds only JSON types, so
    ``write_json`` / ``json.load`` give it back unchanged."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be between 0 and 1")
    if not reports:
        raise ValueError("no reports to summarize")
    by_task: Dict[str, List[Dict[str, Any]]] = {}
    for r in reports:
        by_task.setdefault(r["task"], []).append(r)
    tasks = {}
    for task in sorted(by_task):
        rs = by_task[task]
        for field in ("metric", "setting"):
            values = sorted({str(r.get(field, "full")) for r in rs})
            if len(values) > 1:
                raise ValueError(f"task {task}: reports mix {field}s {', '.join(values)}; "
                                 "one table per " + field)
        setting = rs[0].get("setting", "full")
        teacher = _teacher(task, rs, per_seed=setting != "full")
        runs: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for r in rs:
            runs.setdefault(r["method"], {})[r["seed"]] = r
        methods = {}
        for m in method_order(list(runs)):
            seeds = sorted(runs[m])
            scores = [float(runs[m][s]["student_dev"]) for s in seeds]
            mean = statistics.mean(scores)
            if teacher["teacher_per_seed"] is None:
                teacher_mean = teacher["teacher_dev"]
            else:
                teacher_mean = statistics.mean(runs[m][s]["teacher_dev"] for s in seeds)
            walls = [w for w in (_student_wall(runs[m][s]) for s in seeds) if w is not None]
            row: Dict[str, Any] = {
                "seeds": seeds, "scores": scores, "mean": mean,
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "ratio_to_teacher": mean / teacher_mean if teacher_mean else None,
                "wall_s": statistics.mean(walls) if walls else None,
            }
            if m != baseline:
                paired = _paired_with(runs, m, baseline, confidence)
                del paired["method"]  # the table's baseline
                row.update(paired)
            own = variant_of(m)
            if own is not None and own != baseline and own in runs:
                row["vs_own_method"] = _paired_with(runs, m, own, confidence)
            methods[m] = row
        tasks[task] = {"metric": rs[0]["metric"], "setting": setting, **teacher,
                       "n_seeds": len({r["seed"] for r in rs}), "methods": methods}
    return {"baseline": baseline, "confidence": confidence,
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
            "tasks": tasks}


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def _f(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _interval(low: Optional[float], high: Optional[float]) -> str:
    return "–" if low is None else f"[{low:+.2f}, {high:+.2f}]"


def _delta(row: Dict[str, Any], against: str) -> str:
    if row["n_pairs"] == 0:
        return f"no common seeds with {against}"
    ci = _interval(row["diff_ci_low"], row["diff_ci_high"])
    if row["n_pairs"] > 1:
        return f"{_f(row['diff_mean'], True)} {ci} (n={row['n_pairs']})"
    return f"{_f(row['diff_mean'], True)} (n=1, no interval)"


def _variant_table(methods: Dict[str, Any], conf: str) -> List[str]:
    """Each variant run (supplementary data, other stage lengths) against its own method on
    the same seeds: the comparison such a run exists for."""
    rows = [(m, row["vs_own_method"]) for m, row in methods.items() if "vs_own_method" in row]
    if not rows:
        return []
    out = [f"| run | against | Δ [{conf} CI] (paired t) | bootstrap CI |", "|---|---|---|---|"]
    for m, vs in rows:
        out.append(f"| {m} | {vs['method']} | {_delta(vs, vs['method'])} | "
                   f"{_interval(vs['boot_low'], vs['boot_high'])} |")
    return out


def _short_path(path: str) -> str:
    """An absolute checkpoint path from the run folders' ``runs/`` on: the same on every
    machine, so committed tables do not change with the checkout's location."""
    parts = path.split("/")
    if os.path.isabs(path) and "runs" in parts:
        return "/".join(parts[parts.index("runs"):])
    return path


def _method_table(t: Dict[str, Any], task: str, base: str, conf: str) -> List[str]:
    """The heading (which teacher, intervals over seeds) and one row per method."""
    setting = "" if t["setting"] == "full" else f" ({t['setting']})"
    if t["teacher_per_seed"] is None:
        teacher = f"teacher {t['teacher_dev']:.2f}"
        if t["teacher_checkpoint"]:
            teacher += f" (`{_short_path(t['teacher_checkpoint'])}`)"
    else:
        teacher = (f"teacher per seed (mean {t['teacher_dev']:.2f}: "
                   + ", ".join(f"seed {x['seed']} {x['dev']:.2f}"
                               for x in t["teacher_per_seed"]) + ")")
    out = [f"**{task}{setting}**: dev {t['metric']}, {teacher}, {_seeds(t['n_seeds'])}; "
           f"Δ is the difference to {base} paired by seed, with {conf} intervals over "
           "seeds (paired t, and percentile bootstrap), not over dev examples.", "",
           f"| method | seeds | mean ± std | per seed | student/teacher | Δ vs {base} "
           f"[{conf} CI] (paired t) | bootstrap CI | wall s |",
           "|---|---|---|---|---|---|---|---|"]
    for m, row in t["methods"].items():
        per_seed = ", ".join(f"{s}: {v:.2f}" for s, v in zip(row["seeds"], row["scores"]))
        ratio = row["ratio_to_teacher"]
        ratio = "–" if ratio is None else f"{100 * ratio:.1f}%"
        if m == base:
            delta, boot = "(baseline)", "–"
        else:
            delta, boot = _delta(row, base), _interval(row["boot_low"], row["boot_high"])
        wall = "–" if row["wall_s"] is None else f"{row['wall_s']:.0f}"
        out.append(f"| {m} | {len(row['seeds'])} | {row['mean']:.2f} ± {row['std']:.2f} | "
                   f"{per_seed} | {ratio} | {delta} | {boot} | {wall} |")
    return out


TABLE_PARTS = ("table", "variants")


def task_markdown(summary: Dict[str, Any], task: str, part: str = "table") -> str:
    """One task's method table (``table``) or its variants-against-own-method table
    (``variants``, empty when it has no variant runs), without surrounding blank lines."""
    if part not in TABLE_PARTS:
        raise ValueError(f"part {part!r} is not one of {', '.join(TABLE_PARTS)}")
    if task not in summary["tasks"]:
        raise ValueError(f"no runs of task {task} (tasks: {', '.join(summary['tasks'])})")
    base, conf = summary["baseline"], f"{100 * summary['confidence']:g}%"
    t = summary["tasks"][task]
    lines = (_method_table(t, task, base, conf) if part == "table"
             else _variant_table(t["methods"], conf))
    return "\n".join(lines)


def to_markdown(summary: Dict[str, Any]) -> str:
    """One table per task; the heading says which teacher and that intervals are over seeds."""
    out = []
    for task in summary["tasks"]:
        out += [task_markdown(summary, task, "table"), ""]
        variants = task_markdown(summary, task, "variants")
        if variants:
            out += ["Each variant against its own method, paired by seed:", "", variants, ""]
    return "\n".join(out)


def plot(summary: Dict[str, Any], out_dir: str) -> List[str]:
    """One PNG per task (``TASK.png``, ``TASK-SETTING.png`` for other settings): every seed as
    a dot, so a mean carried by one seed is visible at a glance."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq logs at DEBUG
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no global backend change
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for task, t in summary["tasks"].items():
        name = task if t["setting"] == "full" else f"{task}-{t['setting']}"
        if os.path.basename(name) != name or name in (".", ".."):
            raise ValueError(f"task name {task!r} cannot be a file name")
        methods = list(t["methods"])
        fig = Figure(figsize=(max(4.0, 1.1 * len(methods) + 1.5) + 2.0, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for i, m in enumerate(methods):
            row = t["methods"][m]
            n = len(row["scores"])
            jitter = np.linspace(-0.12, 0.12, n) if n > 1 else np.zeros(1)
            ax.scatter(i + jitter, row["scores"], s=18, color="C0", alpha=0.8, zorder=3,
                       label="seed" if i == 0 else None)
            ax.hlines(row["mean"], i - 0.25, i + 0.25, color="C1", linewidth=2.5, zorder=4,
                      label="mean over seeds" if i == 0 else None)
        label = (f"teacher {t['teacher_dev']:.2f}" if t["teacher_per_seed"] is None
                 else f"teacher, mean over seeds {t['teacher_dev']:.2f}")
        ax.axhline(t["teacher_dev"], color="grey", linestyle="--", linewidth=1, label=label)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylabel(f"dev {t['metric']}")
        ax.set_title(f"{task}{'' if t['setting'] == 'full' else ' ' + t['setting']}: "
                     f"{_seeds(t['n_seeds'])}")
        ax.grid(axis="y", alpha=0.3)
        # outside the axes: inside, "best" still hid a method's mean bar behind the box
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        path = os.path.join(out_dir, f"{name}.png")
        with atomic_output_file(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        paths.append(path)
    return paths


def write_json(summary: Dict[str, Any], path: str) -> None:
    """The summary as JSON (numbers, seeds, names and the teacher path only), replaced
    atomically so a reader never sees half a file."""
    text = json.dumps(summary, indent=1) + "\n"
    with atomic_output_file(path, overwrite=True) as tmp:  # refuses a directory at path
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
