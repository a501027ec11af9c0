"""Paired bootstrap of a metric difference on the same rows.

Challenger and champion are scored on the same holdout rows, so their errors are
correlated; resampling rows (not models) keeps that pairing and gives a much tighter
and honest interval for ``metric(challenger) - metric(champion)`` than two separate
intervals would. Each resample is a row of counts (how often each row was drawn), and
every metric is computed for a block of resamples at once (see :mod:`.metrics`), in
blocks small enough to bound memory.

For metrics of predicted labels (accuracy, precision, recall, F1), a row matters only
through its (label, challenger's class, champion's class) combination, of which there are
at most K^3. Drawing n rows with replacement then amounts to drawing the counts of each
combination from a multinomial, which is the same distribution at a cost independent of
n; large holdouts are resampled that way. Probability and regression metrics resample
rows.

The interval is the percentile interval of the resampled differences; its coverage is
checked by a test on simulated pairs with a known true difference.

>>> from evertrain.evaluate.metrics import Outputs, get_metric
>>> y = np.array([0, 1] * 50)
>>> a = Outputs.classification(y, np.where(y == 1, 0.8, 0.2))
>>> b = Outputs.classification(y, np.full(100, 0.5) + 0.01)
>>> result = paired_bootstrap(get_metric("accuracy"), a, b, n_boot=200, confidence=0.95, seed=1)
>>> round(result.estimate, 2), result.low > 0
(0.5, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from evertrain.evaluate.metrics import Metric, Outputs, one_blas_thread
from evertrain.exceptions import UsageError

#: Cells of one block of resample counts (B_block x n); 4M float64 cells is 32 MB, which
#: keeps memory flat for any holdout size while still amortizing numpy's per-call cost.
BLOCK_CELLS = 4_000_000
#: Rows are resampled by combination (see above) when there are at most a quarter as many
#: distinct combinations as rows; below that the grouping would save little.
GROUP_MAX_SHARE = 0.25
#: Combinations are counted in an array this long at most (a classifier with up to 40 classes
#: and two models); past it they are found by sorting.
COUNTED_KEYS = 1 << 16


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval and the resampled values."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_boot: int
    n_valid: int
    samples: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {
            "estimate": self.estimate,
            "interval": [self.low, self.high],
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "n_valid": self.n_valid,
        }


def resample_counts(n: int, n_boot: int, seed: int | np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of bootstrap count rows, (B_block, n), totalling ``n_boot`` rows, from one seeded stream."""
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_CELLS // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(float)
        done += b


def _check(n_boot: int, confidence: float, n: int) -> None:
    if n_boot < 1:
        raise UsageError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n < 1:
        raise UsageError("cannot bootstrap a metric on zero rows")


def _interval(estimate: float, samples: np.ndarray, confidence: float, n_boot: int) -> Interval:
    valid = samples[np.isfinite(samples)]
    alpha = 1.0 - confidence
    if len(valid) == 0:
        low = high = float("nan")
    else:
        low, high = (float(v) for v in np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0]))
    return Interval(float(estimate), low, high, confidence, n_boot, len(valid), valid)


def _grouped(metric: Metric, outputs: list[Outputs]) -> tuple[list[Outputs], np.ndarray] | None:
    """Outputs reduced to one row per distinct combination, with each combination's count.

    Only for label metrics of classifiers, and only when it pays: at most
    :data:`GROUP_MAX_SHARE` of the rows may be distinct.
    """
    first = outputs[0]
    if metric.needs_proba or first.task in ("regression", "generation"):
        return None  # real-valued outputs (a generator's are per-row likelihoods and scores)
    # One integer per combination (labels and predictions are class indices below ``base``):
    # np.unique on a flat array is many times faster than on rows.
    base = int(max(first.y.max(), *(o.pred.max() for o in outputs))) + 1
    keys = np.zeros(first.n, dtype=np.int64)
    for column in (first.y, *(o.pred for o in outputs)):
        keys = keys * base + column
    space = base ** (1 + len(outputs))
    if space <= COUNTED_KEYS:
        # Counted, not sorted: the same combinations in the same (ascending) order, each with
        # its first row, as np.unique gives them, at a tenth of the cost.
        counted = np.bincount(keys, minlength=space)
        present = np.flatnonzero(counted)
        first_row = np.full(space, first.n)
        np.minimum.at(first_row, keys, np.arange(first.n))
        index, counts = first_row[present], counted[present]
    else:
        _, index, counts = np.unique(keys, return_index=True, return_counts=True)
    if len(index) > GROUP_MAX_SHARE * first.n:
        return None
    return [o.take(index) for o in outputs], counts


def _resampled(metric: Metric, outputs: list[Outputs], n_boot: int, seed: int) -> np.ndarray:
    """Each output's metric under the same ``n_boot`` resamples of the rows: shape (len(outputs), n_boot)."""
    with one_blas_thread():
        return _resampled_rows(metric, outputs, n_boot, seed)


def _resampled_rows(metric: Metric, outputs: list[Outputs], n_boot: int, seed: int) -> np.ndarray:
    n = outputs[0].n
    grouped = _grouped(metric, outputs)
    if grouped is not None:
        groups, counts = grouped
        weights = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot).astype(float)
        return np.stack([metric.resampled(g, weights) for g in groups])
    blocks = [[metric.resampled(o, w) for o in outputs] for w in resample_counts(n, n_boot, seed)]
    return np.stack([np.concatenate([b[i] for b in blocks]) for i in range(len(outputs))])


def paired_bootstrap(
    metric: Metric, challenger: Outputs, champion: Outputs, *, n_boot: int, confidence: float, seed: int
) -> Interval:
    """Interval of ``metric(challenger) - metric(champion)``, both resampled with the same rows."""
    if challenger.n != champion.n or not np.array_equal(challenger.y, champion.y):
        raise UsageError("a paired bootstrap needs both models scored on the same rows with the same labels")
    _check(n_boot, confidence, challenger.n)
    estimate = metric(challenger) - metric(champion)
    values = _resampled(metric, [challenger, champion], n_boot, seed)
    return _interval(estimate, values[0] - values[1], confidence, n_boot)


def bootstrap(metric: Metric, outputs: Outputs, *, n_boot: int, confidence: float, seed: int) -> Interval:
    """Interval of one model's metric."""
    _check(n_boot, confidence, outputs.n)
    return _interval(metric(outputs), _resampled(metric, [outputs], n_boot, seed)[0], confidence, n_boot)


def p_value_below(samples: np.ndarray, bound: float) -> float:
    """One-sided bootstrap p-value for "the true value lies below ``bound``".

    Small when few resampled values reach ``bound``; the +1s keep it above zero, so a
    finite number of resamples never claims certainty.
    """
    return float((np.count_nonzero(samples >= bound) + 1) / (len(samples) + 1))
