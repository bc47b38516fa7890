"""Task metrics inside fairseq's logging: summable statistics per batch, metrics derived once.

Criterions put :func:`prediction_stats` into their logging output; :func:`reduce_glue_metrics`
sums them (over batches and workers, as fairseq does) and registers derived meters, so
``--best-checkpoint-metric accuracy|f1|mcc|pearson|spearman|pearson_spearman`` selects on
exact GLUE values (``pearson_spearman`` = (Pearson + Spearman) / 2, the authors' STS-B choice).
Spearman needs every prediction: validation batches of regression tasks carry them as
tensors and the criterion then declares its outputs not summable (fairseq all-gathers them).

F1 (binary tasks) is the F1 of the task's *positive* label, found by name
(:func:`positive_class`): ``entailment`` for RTE and QNLI, whose label names put it first
(index 0: ``["entailment", "not_entailment"]``), ``"1"`` for MRPC, QQP, SST-2, CoLA and WNLI
(index 1; WNLI's 1 is entailment). Index 1 regardless of names would log RTE's F1 of
``not_entailment``. The MCC is the same whichever class is positive.
"""


from typing import Any, Dict, List, Optional, Sequence

import torch
from fairseq.logging import metrics
from fairseq.logging.meters import ConcatTensorMeter

from fairseq_crild.data import metrics as glue

STAT_PREFIX = "_glue_"
PRED_KEY, TARGET_KEY = "_glue_preds", "_glue_targets"

#: label names that mark a binary task's positive class, in order of precedence
POSITIVE_LABELS = ("entailment", "1")


def positive_class(label_names: Sequence[str], num_classes: int) -> Optional[int]:
    """Index of the class whose F1 is logged: ``entailment`` (RTE, QNLI: index 0), else
    ``"1"`` (MRPC, QQP, ...), else index 1 (unnamed labels); None when not binary."""
    if num_classes != 2:
        return None
    names = [str(n) for n in label_names or []]
    for name in POSITIVE_LABELS:
        if name in names:
            return names.index(name)
    return 1


def prediction_stats(logits: torch.Tensor, target: torch.Tensor, regression: bool,
                     num_classes: int, keep_predictions: bool,
                     positive: Optional[int] = 1) -> Dict[str, Any]:
    """Logging-output entries for one batch (prefixed keys; hidden from the progress bar).
    Binary tasks: ``tp``/``fp``/``fn``/``tn`` count class ``positive`` (see
    :func:`positive_class`) as the positive one; ``positive=None`` leaves them (and F1) out."""
    with torch.no_grad():
        if regression:
            preds = logits.detach().float().view(-1)
            stats = glue.regression_stats(preds.cpu(), target.float().view(-1).cpu())
        else:
            preds = logits.detach().argmax(dim=-1)
            stats = glue.classification_stats(preds.cpu(), target.cpu(), num_classes)
            if num_classes == 2:
                stats = _oriented(stats, positive)
    out: Dict[str, Any] = {STAT_PREFIX + k: v for k, v in stats.items()}
    if regression and keep_predictions:
        out[PRED_KEY] = preds.cpu()
        out[TARGET_KEY] = target.detach().float().view(-1).cpu()
    return out


def _oriented(stats: Dict[str, float], positive: Optional[int]) -> Dict[str, float]:
    """Binary counts with class ``positive`` as the positive one (from the confusion matrix;
    ``cm_i_j``: true i, predicted j)."""
    out = {k: v for k, v in stats.items() if k not in ("tp", "fp", "fn", "tn")}
    if positive is None:
        return out
    if positive not in (0, 1):
        raise ValueError(f"positive class {positive}: a binary task's classes are 0 and 1")
    p, q = positive, 1 - positive
    out.update(tp=stats[f"cm_{p}_{p}"], fp=stats[f"cm_{q}_{p}"], fn=stats[f"cm_{p}_{q}"],
               tn=stats[f"cm_{q}_{q}"])
    return out


def _summed(meters, keys: Sequence[str]) -> Dict[str, float]:
    return {k[len(STAT_PREFIX):]: meters[k].sum for k in keys if k in meters}


def applicable_metrics(keys: Sequence[str]) -> List[str]:
    """GLUE metrics the logged statistics support: fairseq reduces metrics on the criterion
    class (no task options at hand), so the statistics themselves say what was computed."""
    names = {k[len(STAT_PREFIX):] for k in keys}
    if "n" in names:
        return ["pearson", "spearman", "pearson_spearman"]
    out = ["accuracy", "mcc"]
    if "tp" in names:
        out.insert(1, "f1")
    return out


def reduce_glue_metrics(logging_outputs: List[Dict[str, Any]]) -> None:
    """Sums the statistics and logs the GLUE metrics as derived meters (x100, as fairseq
    logs accuracy): accuracy, mcc (+ f1 when binary) or pearson, spearman, pearson_spearman
    (the last two only where the batches carried their predictions: validation)."""
    keys = sorted({k for log in logging_outputs for k in log
                   if k.startswith(STAT_PREFIX) and k not in (PRED_KEY, TARGET_KEY)})
    if not keys:
        return
    for key in keys:
        metrics.log_scalar_sum(key, sum(float(log.get(key, 0.0)) for log in logging_outputs))
    preds = [log[PRED_KEY] for log in logging_outputs if PRED_KEY in log]
    if preds:
        metrics.log_custom(ConcatTensorMeter, PRED_KEY, torch.cat(preds))
        metrics.log_custom(ConcatTensorMeter, TARGET_KEY,
                           torch.cat([log[TARGET_KEY] for log in logging_outputs
                                      if TARGET_KEY in log]))
    for name in applicable_metrics(keys):
        if name == "spearman":
            if not preds:
                continue
            metrics.log_derived(name, lambda m: round(100 * glue.spearman(
                m[PRED_KEY].tensor.numpy(), m[TARGET_KEY].tensor.numpy()), 2))
        elif name == "pearson_spearman":
            if not preds:
                continue
            # from the unrounded Pearson and Spearman, rounded once
            metrics.log_derived(name, lambda m: round(100 * glue.pearson_spearman(
                _summed(m, keys), m[PRED_KEY].tensor.numpy(), m[TARGET_KEY].tensor.numpy()), 2))
        else:
            fn = {"accuracy": glue.accuracy, "f1": glue.f1, "mcc": glue.matthews_corr,
                  "pearson": glue.pearson}[name]
            metrics.log_derived(name, lambda m, fn=fn: round(100 * fn(_summed(m, keys)), 2))
