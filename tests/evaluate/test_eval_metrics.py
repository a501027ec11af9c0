"""Metrics agree with scikit-learn, and weights behave like repeated rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from evertrain.evaluate.metrics import METRICS, Outputs, compute, compute_many, get_metric
from evertrain.exceptions import UsageError

SEEDS = range(5)


def _binary(seed: int, n: int = 300) -> Outputs:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + (y - 0.5) * rng.uniform(0, 0.8, n) + rng.normal(0, 0.2, n), 0.01, 0.99).round(2)
    return Outputs.classification(y, p)


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_metrics_match_sklearn(seed: int) -> None:
    out = _binary(seed)
    assert out.proba is not None
    p1 = out.proba[:, 1]
    assert compute("accuracy", out) == pytest.approx(skm.accuracy_score(out.y, out.pred))
    assert compute("precision", out) == pytest.approx(skm.precision_score(out.y, out.pred))
    assert compute("recall", out) == pytest.approx(skm.recall_score(out.y, out.pred))
    assert compute("f1", out) == pytest.approx(skm.f1_score(out.y, out.pred))
    assert compute("roc_auc", out) == pytest.approx(skm.roc_auc_score(out.y, p1))
    assert compute("log_loss", out) == pytest.approx(skm.log_loss(out.y, p1))
    assert compute("brier", out) == pytest.approx(skm.brier_score_loss(out.y, p1))


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_and_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 200)
    proba = rng.dirichlet([1, 1, 1], 200)
    proba[np.arange(200), y] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    out = Outputs.classification(y, proba)
    assert compute("accuracy", out) == pytest.approx(skm.accuracy_score(y, out.pred))
    assert compute("f1", out) == pytest.approx(skm.f1_score(y, out.pred, average="macro"))
    assert compute("roc_auc", out) == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    assert compute("log_loss", out) == pytest.approx(skm.log_loss(y, proba))
    truth, pred = rng.normal(size=150), rng.normal(size=150)
    reg = Outputs.regression(truth, pred)
    assert compute("rmse", reg) == pytest.approx(np.sqrt(skm.mean_squared_error(truth, pred)))
    assert compute("mae", reg) == pytest.approx(skm.mean_absolute_error(truth, pred))
    assert compute("r2", reg) == pytest.approx(skm.r2_score(truth, pred))


def test_a_metric_is_computed_once_per_outputs_and_a_subset_starts_afresh() -> None:
    out = _binary(3)
    assert out.proba is not None
    auc = compute("roc_auc", out)
    assert out.known == {"roc_auc": auc}
    # Values computed elsewhere on these arrays (a worker, a thread) are taken as they are.
    out.remember({"logloss": 0.25, "f1": None})
    assert compute("log_loss", out) == 0.25 and np.isnan(compute("f1", out))
    assert compute_many(["log_loss", "f1", "roc_auc"], out) == {"log_loss": 0.25, "f1": None, "roc_auc": auc}
    half = out.take(np.arange(out.n // 2))
    assert half.known == {}
    assert half.proba is not None
    assert compute("roc_auc", half) == pytest.approx(skm.roc_auc_score(half.y, half.proba[:, 1]))
    assert compute("log_loss", half) == pytest.approx(skm.log_loss(half.y, half.proba[:, 1]))


def test_weights_equal_repeated_rows() -> None:
    out = _binary(7, n=60)
    counts = np.random.default_rng(1).integers(0, 4, out.n)
    repeated = out.take(np.repeat(np.arange(out.n), counts))
    for name, metric in METRICS.items():
        if "binary" not in metric.tasks:
            continue
        weighted = metric.resampled(out, counts[None, :].astype(float))[0]
        assert weighted == pytest.approx(metric(repeated)), name


def test_calibration_error_of_a_known_case() -> None:
    # All rows say 0.8; half are positive: the gap is 0.3 in the one bin used.
    out = Outputs.classification([1, 0, 1, 0], [0.8, 0.8, 0.8, 0.8])
    assert compute("ece", out) == pytest.approx(0.3)
    assert get_metric("calibration_error").name == "ece"


def test_directions_undefined_values_and_unknown_names() -> None:
    assert get_metric("accuracy").higher_is_better and not get_metric("log_loss").higher_is_better
    one_class = Outputs.classification([1, 1, 1], [0.2, 0.6, 0.9])
    assert compute_many(["roc_auc", "accuracy", "rmse"], one_class) == {"roc_auc": None, "accuracy": 2 / 3}
    with pytest.raises(UsageError, match=r"unknown metric 'acuracy'; known: .*accuracy"):
        get_metric("acuracy")
    with pytest.raises(UsageError, match="needs predicted probabilities"):
        compute("roc_auc", Outputs("binary", np.array([0, 1]), np.array([0, 1])))


@pytest.mark.parametrize("seed", SEEDS)
def test_bootstrap_weighted_auc_matches_sklearn_sample_weight(seed: int) -> None:
    # the bootstrap's own AUC (one sort for every row of weights) against scikit-learn's
    out = _binary(seed, n=120)  # scores rounded to 0.01: many ties
    assert out.proba is not None
    weights = np.random.default_rng(seed).multinomial(out.n, np.full(out.n, 1 / out.n), size=4).astype(float)
    resampled = get_metric("roc_auc").resampled(out, weights)
    expected = [skm.roc_auc_score(out.y, out.proba[:, 1], sample_weight=w) for w in weights]
    assert resampled == pytest.approx(expected)
