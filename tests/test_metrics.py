"""GLUE metrics from summed per-batch statistics equal sklearn/scipy on the full arrays."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from fairseq_crild import metrics as glue


def _batches(n, rng):
    cuts = np.sort(rng.choice(np.arange(1, n), size=6, replace=False))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_classification_metrics_aggregate_exactly(seed, num_classes):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, 203)
    p = np.where(rng.random(203) < 0.6, y, rng.integers(0, num_classes, 203))
    total = glue.sum_stats(glue.classification_stats(p[b], y[b], num_classes)
                           for b in _batches(203, rng))
    assert glue.accuracy(total) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    assert glue.matthews_corr(total) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-12)
    if num_classes == 2:
        assert glue.f1(total) == pytest.approx(skm.f1_score(y, p), abs=1e-12)


def test_degenerate_cases_follow_sklearn():
    y = np.array([1, 1, 1, 1])
    p = np.array([1, 1, 1, 1])
    s = glue.classification_stats(p, y, 2)
    assert glue.matthews_corr(s) == skm.matthews_corrcoef(y, p) == 0.0
    y0, p0 = np.array([0, 0, 0]), np.array([0, 0, 0])
    assert glue.f1(glue.classification_stats(p0, y0, 2)) == skm.f1_score(y0, p0,
                                                                          zero_division=0.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 5, 311)
    p = y + rng.normal(0, 1.0, 311) + 100.0  # an offset makes naive float32 sums cancel
    total = glue.sum_stats(glue.regression_stats(p[b], y[b]) for b in _batches(311, rng))
    assert glue.pearson(total) == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-9)
    assert glue.spearman(p, y) == pytest.approx(stats.spearmanr(p, y)[0], abs=1e-12)
