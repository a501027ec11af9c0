"""Label-free performance estimation for binary classifiers (confidence-based).

Labels arrive late, sometimes weeks late. Until they do, a calibrated score says how
likely each prediction is to be right, and so how well the model is doing on a window:

1. On reference data, where labels are known, fit a calibrator (isotonic regression)
   mapping the model's score to the probability that the label is 1.
2. On a window without labels, calibrate each score to ``p``. Then the expected
   accuracy is ``mean(p if predicted 1 else 1 - p)``, and the expected ROC curve has,
   at each score threshold, ``sum(p)`` expected true positives and ``sum(1 - p)``
   expected false positives above it; its area is the estimated ROC AUC.
3. The interval is for the *realised* metric of this window. It carries both sources
   of doubt: the calibrator is refitted on bootstrap resamples of the reference (the
   calibration itself is an estimate), and for each draw labels are drawn from
   ``Bernoulli(p)`` under one of those calibrators (vectorised); the metric of each
   draw gives the interval.

This is the method NannyML calls CBPE. It holds while the relation between features
and label (the concept) does not change, only the feature distribution (covariate
shift); under concept drift no label-free method can hold, which is why realised
metrics are computed as soon as labels arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from evertrain.exceptions import DataValidationError, UsageError

#: Label draws for the interval. 500 draws put the 95% interval ends within about
#: 10% of their width.
N_DRAWS = 500
#: Bootstrap refits of the calibrator, for the calibration's share of the interval.
N_CALIBRATIONS = 50
#: Coverage of the interval.
INTERVAL = 0.95
#: Decision threshold on the score when predictions are not given.
THRESHOLD = 0.5


@dataclass(frozen=True)
class Estimate:
    """An estimated metric with its interval for the realised value."""

    metric: str
    value: float
    lower: float
    upper: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "n": self.n,
        }


def _array(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DataValidationError(f"{name}: expected numbers") from None
    if a.size == 0:
        raise DataValidationError(f"{name}: no values")
    if not np.isfinite(a).all():
        raise DataValidationError(f"{name}: {int((~np.isfinite(a)).sum())} values are missing or infinite")
    return a


def roc_auc(y_true: Any, y_score: Any) -> float:
    """Realised ROC AUC with label 1 as the positive class (ties count one half).

    ``sklearn.metrics.roc_auc_score``, after the checks that name the bad input; NaN
    where it is undefined (every label the same), so that a window of one class reads
    as "no value" rather than stopping the monitor.
    """
    from sklearn.metrics import roc_auc_score

    y = _array(y_true, "y_true")
    s = _array(y_score, "y_score")
    if y.size != s.size:
        raise DataValidationError(f"y_true has {y.size} values but y_score has {s.size}")
    positive = y == 1
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, s))


def expected_roc_auc(p: np.ndarray, score: np.ndarray) -> float:
    """Area under the expected ROC curve, given calibrated probabilities ``p`` per score."""
    order = np.argsort(-score, kind="stable")
    s, q = score[order], p[order]
    # Tied scores move together along the curve: evaluate at the end of each tie group.
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(q)[ends]
    fp = np.cumsum(1.0 - q)[ends]
    if tp[-1] <= 0 or fp[-1] <= 0:
        return float("nan")
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


class PerformanceEstimator:
    """Estimate accuracy and ROC AUC of a binary classifier on unlabelled windows.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> score = rng.random(5000); y = (rng.random(5000) < score).astype(int)
    >>> est = PerformanceEstimator().fit(y, score)
    >>> e = est.estimate(rng.random(2000))
    >>> round(e["roc_auc"].value, 2), e["roc_auc"].lower < e["roc_auc"].value < e["roc_auc"].upper
    (0.84, True)
    """

    def __init__(
        self,
        *,
        threshold: float = THRESHOLD,
        n_draws: int = N_DRAWS,
        interval: float = INTERVAL,
        seed: int = 0,
    ) -> None:
        self.threshold = threshold
        self.n_draws = n_draws
        self.interval = interval
        self.seed = seed

    def fit(self, y_true: Any, y_score: Any) -> PerformanceEstimator:
        """Fit the calibrator on reference labels and scores."""
        from sklearn.isotonic import IsotonicRegression

        y = _array(y_true, "y_true")
        s = _array(y_score, "y_score")
        if y.size != s.size:
            raise DataValidationError(f"y_true has {y.size} values but y_score has {s.size}")
        bad = np.setdiff1d(np.unique(y), [0.0, 1.0])
        if bad.size:
            raise DataValidationError(f"y_true: labels must be 0 or 1, got {bad[:3].tolist()}")
        if np.unique(y).size < 2:
            raise DataValidationError("y_true: the reference needs both classes to fit a calibrator")
        if not 0.0 < self.interval < 1.0:
            raise UsageError(f"interval must be between 0 and 1, got {self.interval!r}")

        def calibrator() -> IsotonicRegression:
            return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")

        self.calibrator_ = calibrator().fit(s, y)
        rng = np.random.default_rng(self.seed)
        self.bootstrap_calibrators_ = []
        for _ in range(N_CALIBRATIONS):
            pick = rng.integers(0, s.size, s.size)
            self.bootstrap_calibrators_.append(calibrator().fit(s[pick], y[pick]))
        self.reference_auc_ = roc_auc(y, s)
        return self

    def calibrate(self, y_score: Any) -> np.ndarray:
        if not hasattr(self, "calibrator_"):
            raise UsageError(
                "PerformanceEstimator is not fitted: call fit(y_true, y_score) on reference data"
            )
        return np.clip(self.calibrator_.predict(_array(y_score, "y_score")), 0.0, 1.0)

    def estimate(self, y_score: Any, y_pred: Any | None = None) -> dict[str, Estimate]:
        """Estimated ``accuracy`` and ``roc_auc`` of one window, each with an interval."""
        s = _array(y_score, "y_score")
        p = self.calibrate(s)
        pred = (s >= self.threshold).astype(np.float64) if y_pred is None else _array(y_pred, "y_pred")
        if pred.size != s.size:
            raise DataValidationError(f"y_pred has {pred.size} values but y_score has {s.size}")
        acc = float(np.mean(pred * p + (1 - pred) * (1 - p)))
        auc = expected_roc_auc(p, s)
        rng = np.random.default_rng(self.seed)
        boot = np.clip(np.stack([c.predict(s) for c in self.bootstrap_calibrators_]), 0.0, 1.0)
        draws = rng.random((self.n_draws, s.size)) < boot[np.arange(self.n_draws) % len(boot)]
        acc_draws = (draws == pred.astype(bool)).mean(axis=1)
        # the realised AUC of every draw at once: the rank sum of its positives (roc_auc's
        # value, without sorting the scores again for each of the draws)
        ranks = stats.rankdata(s)
        n1 = draws.sum(axis=1)
        n0 = s.size - n1
        with np.errstate(divide="ignore", invalid="ignore"):
            auc_draws = (draws @ ranks - n1 * (n1 + 1) / 2) / (n1 * n0)
        auc_draws = auc_draws[np.isfinite(auc_draws)]
        tail = (1 - self.interval) / 2
        a_lo, a_hi = np.quantile(acc_draws, [tail, 1 - tail])
        out = {"accuracy": Estimate("accuracy", acc, float(a_lo), float(a_hi), s.size)}
        if auc_draws.size:
            u_lo, u_hi = np.quantile(auc_draws, [tail, 1 - tail])
            out["roc_auc"] = Estimate("roc_auc", auc, float(u_lo), float(u_hi), s.size)
        else:
            out["roc_auc"] = Estimate("roc_auc", auc, float("nan"), float("nan"), s.size)
        return out

    def estimate_chunks(
        self, y_score: Any, chunk_size: int, y_pred: Any | None = None
    ) -> list[dict[str, Estimate]]:
        """:meth:`estimate` over consecutive chunks of ``chunk_size`` rows (the last may be shorter)."""
        if chunk_size <= 0:
            raise UsageError(f"chunk_size must be positive, got {chunk_size!r}")
        s = _array(y_score, "y_score")
        pred = None if y_pred is None else _array(y_pred, "y_pred")
        return [
            self.estimate(s[i : i + chunk_size], None if pred is None else pred[i : i + chunk_size])
            for i in range(0, s.size, chunk_size)
        ]


def estimate_performance(
    reference_labels: Any, reference_scores: Any, current_scores: Any, **options: Any
) -> dict[str, Estimate]:
    """One-call form: fit on the reference, estimate on the current window."""
    return PerformanceEstimator(**options).fit(reference_labels, reference_scores).estimate(current_scores)


__all__ = ["Estimate", "PerformanceEstimator", "estimate_performance", "expected_roc_auc", "roc_auc"]
