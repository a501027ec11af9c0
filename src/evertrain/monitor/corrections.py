"""Corrections of p-values for multiple testing: one implementation of each, for every part.

A drift report tests every column at once and a slice gate every slice, so each spends
one false-alarm budget on a family of hypotheses. Every function takes the family's
p-values and returns the adjusted ones in the same order: reject hypothesis ``i`` at
level ``alpha`` when ``adjusted[i] <= alpha``.

* :func:`bonferroni` and :func:`holm` bound the chance of any false rejection in the
  family (family-wise error); Holm's step-down rejects everything Bonferroni does, and
  sometimes more. SciPy has neither, and both are a few lines.
* :func:`benjamini_hochberg` bounds the expected share of false rejections among the
  rejections (false discovery rate); it is ``scipy.stats.false_discovery_control``.

A p-value that is NaN (a test that could say nothing) stays NaN and still counts in
the family's size, which keeps the others' adjustment conservative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _family(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The p-values as floats with NaN read as 1 (no evidence), and where the NaNs were."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    missing = np.isnan(p)
    return np.where(missing, 1.0, p), missing


def bonferroni(p_values: Sequence[float]) -> list[float]:
    """Each p-value times the number of tests, capped at 1.

    >>> bonferroni([0.01, 0.5])
    [0.02, 1.0]
    """
    p, missing = _family(p_values)
    adjusted = np.minimum(p * p.size, 1.0)
    return np.where(missing, np.nan, adjusted).tolist()


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest p-value times (m - k + 1), made monotone.

    Rounded to 12 decimals so that ``3 * 0.01`` reads as ``0.03`` in reports.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p, missing = _family(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum((m - np.arange(m)) * p[order], 1.0))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return np.where(missing, np.nan, adjusted.round(12)).tolist()


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``).

    >>> [round(v, 3) for v in benjamini_hochberg([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    p, missing = _family(p_values)
    if p.size == 0:
        return []
    from scipy import stats  # only here: Bonferroni, the default, needs no scipy

    adjusted = stats.false_discovery_control(p, method="bh")
    return np.where(missing, np.nan, adjusted).tolist()


__all__ = ["benjamini_hochberg", "bonferroni", "holm"]
