"""fairseq_crild/data/metrics.py: metrics from summed per-batch statistics equal sklearn / scipy
on the full arrays. The module is loaded from its file (no fairseq needed)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tests.helpers_bert import load_pure_module

M = load_pure_module("data.metrics")
TOL = 1e-9


def random_batches(n: int, rng: np.random.Generator) -> list[slice]:
    """Split range(n) into random uneven contiguous batches (sizes 1..17)."""
    cuts, pos = [], 0
    while pos < n:
        size = int(rng.integers(1, 18))
        cuts.append(slice(pos, min(n, pos + size)))
        pos += size
    return cuts


def summed_classification(preds, targets, k, rng, as_tensor=False):
    stats = []
    for sl in random_batches(len(targets), rng):
        p, t = preds[sl], targets[sl]
        if as_tensor:
            p, t = torch.from_numpy(p), torch.from_numpy(t)
        stats.append(M.classification_stats(p, t, k))
    return M.sum_stats(stats)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [2, 3])
def test_classification_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    targets = rng.integers(0, k, n)
    # Correlated predictions so that MCC is far from 0.
    preds = np.where(rng.random(n) < 0.6, targets, rng.integers(0, k, n))
    total = summed_classification(preds, targets, k, rng, as_tensor=bool(seed % 2))

    assert total["count"] == n
    assert M.accuracy(total) == pytest.approx(accuracy_score(targets, preds), abs=TOL)
    assert M.matthews_corr(total) == pytest.approx(matthews_corrcoef(targets, preds), abs=TOL)
    if k == 2:
        assert M.f1(total) == pytest.approx(f1_score(targets, preds), abs=TOL)
        assert total["tp"] + total["fp"] + total["fn"] + total["tn"] == n
    else:
        for c in range(k):
            ref = f1_score(targets, preds, labels=[c], average=None)[0]
            assert M.f1(total, positive=c) == pytest.approx(ref, abs=TOL)
    cm = M.confusion_matrix(total)
    assert cm.shape == (k, k) and cm.sum() == n
    got = M.glue_metrics(["accuracy", "mcc"], total)
    assert got["mcc"] == M.matthews_corr(total)


def test_logits_are_argmaxed():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    targets = torch.tensor([1, 2, 2])
    stats = M.classification_stats(logits, targets, 3)
    assert stats["correct"] == 2 and stats["cm_2_0"] == 1 and stats["count"] == 3
    assert set(stats) == set(M.classification_stat_keys(3))
    assert set(M.classification_stats([1], [1], 2)) == set(M.classification_stat_keys(2))


def test_classification_edge_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on ill-defined scores
        # All one class in both predictions and labels: MCC undefined -> 0.
        t = np.zeros(10, dtype=int)
        s = M.classification_stats(t, t, 2)
        assert M.matthews_corr(s) == 0.0 == matthews_corrcoef(t, t)
        assert M.accuracy(s) == 1.0
        # No positives anywhere: F1 undefined -> 0 (sklearn's default zero_division).
        assert M.f1(s) == 0.0 == f1_score(t, t)
        # Constant prediction, mixed labels: MCC 0.
        t2 = np.array([0, 1, 1, 0, 1])
        p2 = np.ones(5, dtype=int)
        s2 = M.classification_stats(p2, t2, 2)
        assert M.matthews_corr(s2) == 0.0 == matthews_corrcoef(t2, p2)
        assert M.f1(s2) == pytest.approx(f1_score(t2, p2), abs=TOL)
        # Positive labels never predicted: F1 0.
        s3 = M.classification_stats(np.zeros(5, dtype=int), t2, 2)
        assert M.f1(s3) == 0.0
        # Perfect and inverted predictions.
        assert M.matthews_corr(M.classification_stats(t2, t2, 2)) == pytest.approx(1.0)
        assert M.matthews_corr(M.classification_stats(1 - t2, t2, 2)) == pytest.approx(-1.0)
        # Multi-class with a class never seen: still matches sklearn.
        t4 = np.array([0, 0, 1, 1, 0, 1])
        p4 = np.array([0, 1, 1, 1, 0, 0])
        s4 = M.classification_stats(p4, t4, 3)
        assert M.matthews_corr(s4) == pytest.approx(matthews_corrcoef(t4, p4), abs=TOL)
    assert M.accuracy({"correct": 0.0, "count": 0.0}) == 0.0
    with pytest.raises(ValueError):
        M.classification_stats([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        M.classification_stats([0, 1, 1], [0, 1], 2)


def test_counts_arrive_as_floats_or_tensors():
    s = M.classification_stats([0, 1, 1, 0], [0, 1, 0, 0], 2)
    as_tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in s.items()}
    assert M.matthews_corr(as_tensors) == pytest.approx(M.matthews_corr(s))
    assert M.f1(as_tensors) == pytest.approx(M.f1(s))
    with pytest.raises(ValueError, match="integer"):
        M.accuracy({"correct": 1.5, "count": 3.0})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(100, 600))
    targets = np.round(rng.uniform(0, 5, n) * 5) / 5  # STS-B-like, with ties
    preds = (targets + rng.normal(0, 1.0, n)).astype(np.float32)
    stats = []
    for sl in random_batches(n, rng):
        stats.append(M.regression_stats(torch.from_numpy(preds[sl]), targets[sl]))
    total = M.sum_stats(stats)
    ref_p = pearsonr(preds.astype(np.float64), targets).statistic
    assert M.pearson(total) == pytest.approx(ref_p, abs=TOL)
    ref_s = spearmanr(preds, targets).statistic
    assert M.spearman(preds, targets) == pytest.approx(ref_s, abs=TOL)
    got = M.glue_metrics("STS-B", total, preds=preds, targets=targets)
    assert got == {"pearson": M.pearson(total), "spearman": M.spearman(preds, targets)}
    with pytest.raises(ValueError, match="spearman"):
        M.glue_metrics("sts-b", total)


def test_pearson_large_offset_float64():
    # A large common offset makes the textbook formula cancel; float64 sums keep 1e-9.
    rng = np.random.default_rng(7)
    x = 1000.0 + rng.normal(0, 1, 2000)
    y = 1000.0 + 0.5 * (x - 1000.0) + rng.normal(0, 1, 2000)
    stats = M.sum_stats(
        M.regression_stats(x[i : i + 37], y[i : i + 37]) for i in range(0, 2000, 37)
    )
    assert M.pearson(stats) == pytest.approx(pearsonr(x, y).statistic, abs=1e-9)


def test_regression_edge_cases():
    const = M.regression_stats([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert M.pearson(const) == 0.0
    assert M.spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert M.pearson(M.regression_stats([1.0], [2.0])) == 0.0
    assert M.pearson(M.regression_stats([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])) == pytest.approx(1.0)
    assert M.spearman(torch.tensor([1.0, 2.0, 3.0]), [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert M.pearson(
        M.regression_stats(torch.tensor([1.0, 3.0], dtype=torch.bfloat16), [0, 1])
    ) == (pytest.approx(1.0))


def test_glue_task_metrics():
    assert M.glue_task_metrics("CoLA") == ("mcc",)
    assert M.glue_task_metrics("SST-2") == ("accuracy",)
    assert M.glue_task_metrics("MRPC") == ("f1", "accuracy")
    assert M.glue_task_metrics("QQP") == ("f1", "accuracy")
    assert M.glue_task_metrics("sts_b") == ("pearson", "spearman")
    assert M.glue_task_metrics("MNLI-mm") == ("accuracy",)
    for task in ("QNLI", "RTE", "WNLI", "MNLI"):
        assert M.glue_task_metrics(task) == ("accuracy",)
    with pytest.raises(ValueError):
        M.glue_task_metrics("squad")
    s = M.classification_stats([1, 0, 1, 1], [1, 0, 0, 1], 2)
    got = M.glue_metrics("MRPC", s)
    assert got == {"f1": pytest.approx(0.8), "accuracy": pytest.approx(0.75)}
    with pytest.raises(ValueError, match="unknown metric"):
        M.glue_metrics(["auc"], s)


def _plain_ranks(values: list) -> list:
    """1-based ranks with ties given their average rank (plain Python)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _plain_pearson(x: list, y: list) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    vx = sum((a - mx) ** 2 for a in x)
    vy = sum((b - my) ** 2 for b in y)
    return cov / (vx * vy) ** 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_pearson_spearman_is_the_mean_of_both(seed):
    """The authors' STS-B selection metric, against a plain-Python float64 reference
    (Spearman = Pearson of average ranks), from batch sums as fairseq reduces them."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 200))
    targets = np.round(rng.uniform(0, 5, n) * 5) / 5  # ties, as STS-B's scores
    preds = targets ** 2 / 5 + rng.normal(0, 0.8, n)  # monotone but not linear: r != rho
    total = M.sum_stats(M.regression_stats(preds[sl], targets[sl])
                        for sl in random_batches(n, rng))
    x, y = [float(v) for v in preds], [float(v) for v in targets]
    ref_r = _plain_pearson(x, y)
    ref_rho = _plain_pearson(_plain_ranks(x), _plain_ranks(y))
    assert abs(ref_r - ref_rho) > 1e-3  # the two differ, so the mean is a real test
    want = (ref_r + ref_rho) / 2
    assert M.pearson_spearman(total, preds, targets) == pytest.approx(want, abs=TOL)
    got = M.glue_metrics(["pearson", "spearman", "pearson_spearman"], total, preds, targets)
    assert got["pearson_spearman"] == pytest.approx(want, abs=TOL)
    assert got["pearson"] == pytest.approx(ref_r, abs=TOL)
    with pytest.raises(ValueError, match="pearson_spearman needs the full"):
        M.glue_metrics(["pearson_spearman"], total)


def test_validation_logs_pearson_spearman():
    """glue_logging derives pearson_spearman (x100) in fairseq's reduction of validation
    outputs, where the batches carry their predictions; training batches, which do not,
    log no ranked metric."""
    from fairseq.logging import metrics as fs_metrics

    from fairseq_crild.criterions.glue_logging import prediction_stats, reduce_glue_metrics

    rng = np.random.default_rng(3)
    preds = torch.tensor(rng.normal(size=40))
    targets = torch.tensor(np.round(rng.uniform(0, 5, 40)), dtype=torch.float32)
    targets_b = targets.double().tolist()
    preds_f = preds.float().double().tolist()  # the criterion logs float32 predictions
    want = 100 * (_plain_pearson(preds_f, targets_b)
                  + _plain_pearson(_plain_ranks(preds_f), _plain_ranks(targets_b))) / 2
    for keep, expect in ((True, True), (False, False)):
        logs = [prediction_stats(preds[i:i + 16].view(-1, 1), targets[i:i + 16], True, 1,
                                 keep_predictions=keep) for i in range(0, 40, 16)]
        with fs_metrics.aggregate(new_root=True) as agg:
            reduce_glue_metrics(logs)
            smoothed = agg.get_smoothed_values()
        assert ("pearson_spearman" in smoothed) == expect
        assert "pearson" in smoothed
        if expect:
            assert smoothed["pearson_spearman"] == pytest.approx(round(want, 2), abs=1e-9)


def test_the_glue_tables_are_read_from_one_table():
    from fairseq_crild.data.glue_tasks import TASKS
    from fairseq_crild.pipeline import hydra_configs as hc

    glue = [name for name, spec in TASKS.items() if spec.labelled is not None]
    assert list(hc.GLUE_TRAIN_SIZES) == list(hc.GLUE_METRICS) == glue
    for name in glue:
        assert M.glue_task_metrics(name) == TASKS[name].metrics
        assert hc.GLUE_METRICS[name] == TASKS[name].metrics[0]
        assert hc.GLUE_TRAIN_SIZES[name] == TASKS[name].train_size
    assert hc.GLUE_TRAIN_SIZES["RTE"] == 2490 and hc.GLUE_TRAIN_SIZES["MNLI"] == 392702
