"""Label-free estimation tracks the realised metrics under covariate shift."""

from __future__ import annotations

import numpy as np
import pytest

from evertrain.exceptions import DataValidationError, UsageError
from evertrain.monitor.estimate import PerformanceEstimator, roc_auc


def _data(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed model (logistic in x) on features whose distribution moves by ``shift``."""
    x = rng.normal(shift, 1.0, n)
    p_true = 1 / (1 + np.exp(-2.0 * x))
    y = (rng.random(n) < p_true).astype(int)
    score = 1 / (1 + np.exp(-1.2 * x))  # ranks right, but not calibrated
    return y, score


def test_estimates_track_realised_metrics() -> None:
    rng = np.random.default_rng(1)
    y_ref, s_ref = _data(rng, 20_000, 0.0)
    est = PerformanceEstimator().fit(y_ref, s_ref)
    errors, covered = [], 0
    for shift in (0.0, 0.5, 1.0, 1.5, -1.0):
        y, s = _data(rng, 5_000, shift)
        e = est.estimate(s)
        realised_acc = float(np.mean((s >= 0.5) == y))
        realised_auc = roc_auc(y, s)
        assert e["accuracy"].value == pytest.approx(realised_acc, abs=0.03)
        errors.append(abs(e["roc_auc"].value - realised_auc))
        covered += e["roc_auc"].lower <= realised_auc <= e["roc_auc"].upper
    assert np.mean(errors) < 0.015
    assert covered >= 4
    chunks = est.estimate_chunks(s, 2_000)
    assert [c["accuracy"].n for c in chunks] == [2000, 2000, 1000]


def test_bad_inputs() -> None:
    with pytest.raises(UsageError, match="not fitted"):
        PerformanceEstimator().estimate([0.2, 0.4])
    with pytest.raises(DataValidationError, match="labels must be 0 or 1"):
        PerformanceEstimator().fit([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataValidationError, match="y_true has 2 values but y_score has 3"):
        PerformanceEstimator().fit([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataValidationError, match="1 values are missing"):
        PerformanceEstimator().fit([0, 1, 1], [0.1, float("nan"), 0.3])


def test_realised_auc_is_sklearns_with_label_one_positive() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    s = (rng.random(400) * 0.5 + 0.3 * y).round(1)  # coarse scores: ties count one half
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))  # one class: undefined, not an error
    with pytest.raises(DataValidationError, match="y_true has 2 values but y_score has 3"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
