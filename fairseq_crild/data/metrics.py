"""Exact GLUE dev metrics from summable sufficient statistics (no fairseq imports).

fairseq sums every key of the criterion's logging outputs over batches and workers, then
derives metrics from the sums. So metrics come in two halves:

* per batch: :func:`classification_stats` / :func:`regression_stats` return flat
  ``{name: float}`` dicts of counts and sums; the criterion logs them (e.g. with
  ``metrics.log_scalar_sum``) and fairseq adds them up;
* at the end: :func:`accuracy`, :func:`f1`, :func:`matthews_corr`, :func:`pearson` (or
  :func:`glue_metrics`) turn the summed dict into the metric.

Exact from sums: accuracy, binary F1, Matthews correlation (multi-class too; the
confusion matrix is a sum of per-batch confusion matrices) and Pearson (from n, the
sums of x, y, x^2, y^2 and xy). Spearman is NOT a function of any fixed-size sums (it
needs the ranks of the whole set): the caller must keep every (prediction, target) pair
of the evaluated split (e.g. gather them across workers at the end of validation) and
call :func:`spearman` on them (the same holds for :func:`pearson_spearman`, the authors'
STS-B selection metric).

Numerics: counts are integers and the MCC is computed with exact Python integers. The
Pearson sums are accumulated in float64 (inputs are cast before summing); the textbook
formula ``S_xy - S_x S_y / n`` cancels catastrophically in float32 but loses at most
~1e-16 * n * max|x|^2 relative to the covariance in float64, far below what GLUE
reports. Keep the sums in float64 when reducing across workers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fairseq_crild.data.glue_tasks import TASKS as _GLUE_TASKS

__all__ = [
    "GLUE_TASK_METRICS",
    "REGRESSION_KEYS",
    "accuracy",
    "classification_stat_keys",
    "classification_stats",
    "confusion_matrix",
    "f1",
    "glue_metrics",
    "glue_task_metrics",
    "matthews_corr",
    "pearson",
    "pearson_spearman",
    "regression_stats",
    "spearman",
    "sum_stats",
]

#: Metrics reported per GLUE task, keyed by the lower-case alphanumeric name ("sst2", and
#: "mnlim" / "mnlimm" for MNLI's two dev sets), read from the labelled tasks of the one GLUE
#: table (:data:`fairseq_crild.data.glue_tasks.TASKS`): the GLUE benchmark's metrics (MCC for
#: CoLA, F1 and accuracy for MRPC and QQP, Pearson and Spearman for STS-B, accuracy
#: elsewhere). The first one is the natural default for checkpoint selection (our choice;
#: the paper does not say for F1/acc tasks).
GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    re.sub(r"[^a-z0-9]", "", name.lower()): spec.metrics
    for name, spec in _GLUE_TASKS.items() if spec.labelled is not None}
GLUE_TASK_METRICS.update(mnlim=_GLUE_TASKS["MNLI"].metrics, mnlimm=_GLUE_TASKS["MNLI"].metrics)

#: Keys of :func:`regression_stats` (all summable).
REGRESSION_KEYS = ("n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")

_CM_KEY = re.compile(r"^cm_(\d+)_(\d+)$")


def _to_numpy(x: Any) -> np.ndarray:
    """Tensor / array / sequence -> numpy array, without importing torch here."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach()
        if hasattr(x, "float") and str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------- classification


def classification_stat_keys(num_classes: int) -> list[str]:
    """All keys :func:`classification_stats` returns for ``num_classes`` (to log them all)."""
    keys = ["count", "correct"]
    if num_classes == 2:
        keys += ["tp", "fp", "fn", "tn"]
    keys += [f"cm_{i}_{j}" for i in range(num_classes) for j in range(num_classes)]
    return keys


def classification_stats(preds: Any, targets: Any, num_classes: int) -> dict[str, float]:
    """Summable counts of one batch: "count", "correct", the confusion matrix "cm_i_j"
    (i = true label, j = predicted label) and, for two classes, "tp", "fp", "fn", "tn"
    with label 1 as the positive class.

    ``preds`` are class indices shaped like ``targets``, or scores with one extra trailing
    class dimension (argmax is taken). Every key is always present (zeros included) so that
    sums over batches line up.
    """
    if num_classes < 2:
        raise ValueError(f"classification_stats: num_classes must be >= 2, got {num_classes}")
    p = _to_numpy(preds)
    t = _to_numpy(targets)
    if p.ndim == t.ndim + 1 and p.shape[-1] == num_classes:
        p = p.argmax(axis=-1)  # scores / logits -> class indices
    p = p.reshape(-1)
    t = t.reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"classification_stats: {p.size} predictions for {t.size} targets")
    p = p.astype(np.int64)
    t = t.astype(np.int64)
    for name, arr in (("prediction", p), ("target", t)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"classification_stats: {name} labels must lie in 0..{num_classes - 1}, got "
                f"range {arr.min()}..{arr.max()}"
            )
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    stats: dict[str, float] = {"count": float(t.size), "correct": float(np.trace(cm))}
    if num_classes == 2:
        stats.update(tp=float(cm[1, 1]), fp=float(cm[0, 1]), fn=float(cm[1, 0]), tn=float(cm[0, 0]))
    for i in range(num_classes):
        for j in range(num_classes):
            stats[f"cm_{i}_{j}"] = float(cm[i, j])
    return stats


def _count(stats: Mapping[str, Any], key: str) -> int:
    """A summed count as an exact int (sums may arrive as floats or 0-d tensors)."""
    value = float(stats[key])
    rounded = round(value)
    if abs(value - rounded) > 1e-6 * max(1.0, abs(value)):
        raise ValueError(f"metrics: count {key!r} = {value} is not an integer")
    return int(rounded)


def confusion_matrix(stats: Mapping[str, Any]) -> np.ndarray:
    """The K x K integer confusion matrix (rows = true, columns = predicted) from "cm_i_j"."""
    entries = {}
    for key in stats:
        m = _CM_KEY.match(key)
        if m:
            entries[(int(m.group(1)), int(m.group(2)))] = _count(stats, key)
    if not entries:
        raise ValueError("metrics: no confusion-matrix keys 'cm_i_j' in the statistics")
    k = max(max(i, j) for i, j in entries) + 1
    cm = np.zeros((k, k), dtype=np.int64)
    for (i, j), v in entries.items():
        cm[i, j] = v
    return cm


def accuracy(stats: Mapping[str, Any]) -> float:
    """correct / count (0.0 for an empty set)."""
    if "correct" in stats and "count" in stats:
        correct, count = _count(stats, "correct"), _count(stats, "count")
    else:
        cm = confusion_matrix(stats)
        correct, count = int(np.trace(cm)), int(cm.sum())
    return correct / count if count else 0.0


def f1(stats: Mapping[str, Any], positive: int = 1) -> float:
    """F1 of class ``positive`` (default 1: GLUE's MRPC/QQP convention).

    Equals ``sklearn.metrics.f1_score`` (binary); 0.0 when undefined (no positive
    predictions and no positive labels), as sklearn's default ``zero_division``.
    """
    if positive == 1 and all(k in stats for k in ("tp", "fp", "fn")):
        tp, fp, fn = (_count(stats, k) for k in ("tp", "fp", "fn"))
    else:
        cm = confusion_matrix(stats)
        if not 0 <= positive < cm.shape[0]:
            raise ValueError(f"f1: positive class {positive} not in 0..{cm.shape[0] - 1}")
        tp = int(cm[positive, positive])
        fp = int(cm[:, positive].sum()) - tp
        fn = int(cm[positive, :].sum()) - tp
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def matthews_corr(stats: Mapping[str, Any]) -> float:
    """Matthews correlation (multi-class R_K statistic) from the confusion matrix.

    Same formula as ``sklearn.metrics.matthews_corrcoef``, evaluated in exact integer
    arithmetic; 0.0 when undefined (a constant prediction or label), as sklearn does.
    """
    cm = [[int(v) for v in row] for row in confusion_matrix(stats)]
    k = len(cm)
    t_sum = [sum(cm[i]) for i in range(k)]  # true counts per class
    p_sum = [sum(cm[i][j] for i in range(k)) for j in range(k)]  # predicted counts
    n = sum(t_sum)
    correct = sum(cm[i][i] for i in range(k))
    cov_ytyp = correct * n - sum(a * b for a, b in zip(t_sum, p_sum))
    cov_ypyp = n * n - sum(b * b for b in p_sum)
    cov_ytyt = n * n - sum(a * a for a in t_sum)
    denom = cov_ytyt * cov_ypyp
    if denom == 0:
        return 0.0
    return cov_ytyp / math.sqrt(denom)


# --------------------------------------------------------------------------- regression


def regression_stats(preds: Any, targets: Any) -> dict[str, float]:
    """Summable float64 sums for Pearson: n, sum x, sum y, sum x^2, sum y^2, sum xy
    (x = prediction, y = target; both flattened and cast to float64 before summing)."""
    x = _to_numpy(preds).astype(np.float64).reshape(-1)
    y = _to_numpy(targets).astype(np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"regression_stats: {x.size} predictions for {y.size} targets")
    return {
        "n": float(x.size),
        "sum_x": float(x.sum()),
        "sum_y": float(y.sum()),
        "sum_xx": float(np.dot(x, x)),
        "sum_yy": float(np.dot(y, y)),
        "sum_xy": float(np.dot(x, y)),
    }


def pearson(stats: Mapping[str, Any]) -> float:
    """Pearson r from the summed :func:`regression_stats` (float64).

    0.0 when undefined (fewer than 2 pairs or a constant side; scipy returns NaN there,
    which would break "best checkpoint" comparisons). Clipped to [-1, 1].
    """
    n = float(stats["n"])
    if n < 2:
        return 0.0
    sx, sy = float(stats["sum_x"]), float(stats["sum_y"])
    sxx = float(stats["sum_xx"]) - sx * sx / n
    syy = float(stats["sum_yy"]) - sy * sy / n
    sxy = float(stats["sum_xy"]) - sx * sy / n
    # Relative tolerance: a constant side leaves only rounding noise in its variance.
    eps = 1e-12
    if sxx <= eps * max(float(stats["sum_xx"]), 1e-300) or syy <= eps * max(
        float(stats["sum_yy"]), 1e-300
    ):
        return 0.0
    r = sxy / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))


def spearman(preds: Any, targets: Any) -> float:
    """Spearman rho of all (prediction, target) pairs (``scipy.stats.spearmanr``; ties get
    average ranks). Needs the full arrays: it cannot be summed from batches. 0.0 when
    undefined (fewer than 2 pairs or a constant side)."""
    from scipy.stats import spearmanr

    x = _to_numpy(preds).astype(np.float64).reshape(-1)
    y = _to_numpy(targets).astype(np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman: {x.size} predictions for {y.size} targets")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    return float(spearmanr(x, y).statistic)


def pearson_spearman(stats: Mapping[str, Any], preds: Any, targets: Any) -> float:
    """(Pearson + Spearman) / 2: the CR-ILD authors' STS-B selection metric (one number
    that rewards both the linear fit and the ranking). Pearson from the summed ``stats``,
    Spearman from the full arrays, each unrounded."""
    return (pearson(stats) + spearman(preds, targets)) / 2.0


# --------------------------------------------------------------------------- convenience


def sum_stats(stats_list: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Key-wise sum of per-batch statistics (what fairseq's reduction does)."""
    total: dict[str, float] = {}
    for stats in stats_list:
        for key, value in stats.items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


def glue_task_metrics(task: str) -> tuple[str, ...]:
    """Metric names for a GLUE task name ("CoLA", "SST-2", "sts_b", "MNLI-mm", ...)."""
    key = re.sub(r"[^a-z0-9]", "", task.lower())
    if key not in GLUE_TASK_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASK_METRICS)}")
    return GLUE_TASK_METRICS[key]


_SUMMED = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corr, "pearson": pearson}
_RANKED = ("spearman", "pearson_spearman")  # need every (prediction, target) pair


def glue_metrics(
    task_metric_names: Sequence[str] | str,
    stats: Mapping[str, Any],
    preds: Any = None,
    targets: Any = None,
) -> dict[str, float]:
    """Compute the named metrics ("accuracy", "f1", "mcc", "pearson", "spearman",
    "pearson_spearman") from summed statistics; a GLUE task name ("MRPC") selects its
    metrics. "spearman" and "pearson_spearman" need ``preds`` and ``targets`` (the full
    arrays)."""
    names = (
        glue_task_metrics(task_metric_names)
        if isinstance(task_metric_names, str)
        else tuple(task_metric_names)
    )
    out: dict[str, float] = {}
    for name in names:
        if name in _RANKED:
            if preds is None or targets is None:
                raise ValueError(
                    f"glue_metrics: {name} needs the full prediction and target arrays "
                    "(spearman is not a function of summed statistics)"
                )
            out[name] = (spearman(preds, targets) if name == "spearman"
                         else pearson_spearman(stats, preds, targets))
        elif name in _SUMMED:
            out[name] = _SUMMED[name](stats)
        else:
            raise ValueError(
                f"glue_metrics: unknown metric {name!r}; known: {sorted([*_SUMMED, *_RANKED])}"
            )
    return out
