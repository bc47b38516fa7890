"""What the report says about dev predictions: every metric, a constant baseline, agreement.

Pure functions of dev labels and predictions (class indices, or scores for a regression
task); the report computes the predictions once per checkpoint
(:func:`fairseq_crild.pipeline.report.dev_outputs`). Metrics are on the scale fairseq logs
them (x100), so a row of the report can set the log's best evaluation beside the value
recomputed from the checkpoint file.

* :func:`report_metric_names`: every metric the criterions log for the task (accuracy, F1 of
  the positive label and MCC for binary tasks; accuracy and MCC for more classes; Pearson,
  Spearman and their mean for regression), the task's GLUE metrics first.
* :func:`constant_baseline`: the majority class of the dev labels (ties: the lowest label
  index) predicted for every example, or the mean dev score for regression. It is the best a
  constant predictor can score on dev accuracy: a student at this line has learnt nothing.
  A constant has no correlation: Pearson/Spearman (and MCC) of a constant are undefined,
  counted 0 as :mod:`fairseq_crild.data.metrics` does.
* :func:`agreement`: share of dev examples where teacher and student predict the same class
  (x100), or the Pearson correlation of their scores (x100) for regression: how much of the
  teacher the student reproduces, whatever the labels say.
"""

from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

from fairseq_crild.data import metrics as glue

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "pearson_spearman")


def report_metric_names(task_metrics: Sequence[str], regression: bool, num_classes: int,
                        selection: Optional[str] = None) -> List[str]:
    """The metrics a report shows: the task's GLUE metrics first, then the selection metric,
    then the rest of what the criterions log (F1 only for two classes)."""
    logged = [m for m in (REGRESSION_METRICS if regression else CLASSIFICATION_METRICS)
              if regression or m != "f1" or num_classes == 2]
    names: List[str] = []
    for m in [*task_metrics, *([selection] if selection else []), *logged]:
        if m not in names:
            names.append(m)
    return names


def task_metrics(preds: Sequence[Any], targets: Sequence[Any], names: Sequence[str],
                 regression: bool, num_classes: int, positive: Optional[int] = 1
                 ) -> Dict[str, float]:
    """``names`` of ``preds`` against ``targets`` (x100, unrounded); binary F1 is the F1 of
    class ``positive`` (the criterions' choice: entailment for RTE/QNLI)."""
    if len(preds) != len(targets):
        raise ValueError(f"task_metrics: {len(preds)} predictions for {len(targets)} labels")
    if regression:
        stats = glue.regression_stats([float(p) for p in preds], [float(t) for t in targets])
    else:
        stats = glue.classification_stats([int(p) for p in preds], [int(t) for t in targets],
                                          num_classes)
    out: Dict[str, float] = {}
    for name in names:
        if name == "f1":
            if regression or num_classes != 2 or positive is None:
                continue
            out[name] = 100 * glue.f1(stats, positive)
        else:
            out[name] = 100 * glue.glue_metrics([name], stats, preds, targets)[name]
    return out


def constant_baseline(targets: Sequence[Any], names: Sequence[str], regression: bool,
                      num_classes: int, label_names: Sequence[str] = (),
                      positive: Optional[int] = 1) -> Dict[str, Any]:
    """The majority dev class (classification) or the mean dev score (regression), predicted
    for every dev example, and its ``names`` metrics (x100)."""
    if not targets:
        raise ValueError("constant_baseline: the dev split has no labels")
    if regression:
        value: Any = sum(float(t) for t in targets) / len(targets)
        kind, label = "mean", f"{value:.3f}"
    else:
        counts = Counter(int(t) for t in targets)
        value = min(counts, key=lambda c: (-counts[c], c))  # most frequent, then lowest index
        kind = "majority"
        label = str(label_names[value]) if value < len(label_names) else str(value)
    preds = [value] * len(targets)
    return {"kind": kind, "prediction": value, "label": label,
            "metrics": task_metrics(preds, targets, names, regression, num_classes, positive)}


def agreement(teacher: Sequence[Any], student: Sequence[Any], regression: bool
              ) -> Dict[str, Any]:
    """Teacher-student agreement on the same dev examples: % of equal predicted classes, or
    for regression the Pearson correlation (x100) of the two models' scores."""
    if len(teacher) != len(student):
        raise ValueError(f"agreement: {len(teacher)} teacher predictions for {len(student)} "
                         "student predictions")
    if not teacher:
        raise ValueError("agreement: no dev predictions")
    if regression:
        value = 100 * glue.pearson(glue.regression_stats([float(s) for s in student],
                                                         [float(t) for t in teacher]))
        return {"kind": "pearson", "value": value, "examples": len(teacher)}
    same = sum(int(a) == int(b) for a, b in zip(teacher, student))
    return {"kind": "same_class", "value": 100.0 * same / len(teacher), "examples": len(teacher)}
