"""Drift statistics from two profiles, with their error bounds.

From two profiles on the same bins, :func:`compare_numeric_profiles` gives the KS
distance at every bin edge (exact there, since counts are exact) and the Wasserstein
distance from exact per-bin integrals, each with a deterministic error bound
computed from the data:

* ``ks_error = max over bins of max(reference share, current share)``: the empirical
  CDFs each rise by at most their share inside a bin.
* ``wasserstein_error = sum over bins where F - G may change sign of
  2 * width * min(room above, room below)``: elsewhere the per-bin integral of
  ``|F - G|`` is exact.

Both distances from profiles are never above the exact ones and never below them by
more than the bound (``tests/monitor/test_profiles.py`` checks it on random data).
"""

from __future__ import annotations

import math

import numpy as np

from evertrain.exceptions import UsageError
from evertrain.monitor.profiles import CategoricalProfile, NumericProfile
from evertrain.monitor.tests import (
    CategoricalComparison,
    NumericComparison,
    compare_categorical,
    ks_asymptotic_p_value,
    spread_of,
)

#: Relative size under which a bin's offset sum counts as zero (all values on its left
#: edge); summation rounding of a million equal values stays far below it.
_ATOM_TOLERANCE = 1e-9


def coarse_groups(ref_counts: np.ndarray, n_groups: int) -> np.ndarray:
    """Indices of fine edges closest to the reference's k / n_groups quantiles."""
    total = ref_counts.sum()
    m = ref_counts.size - 1
    if total == 0 or m == 0:
        return np.empty(0, dtype=np.intp)
    cum = np.cumsum(ref_counts)[:m] / total  # reference share below each edge
    targets = np.arange(1, n_groups) / n_groups
    right = np.clip(np.searchsorted(cum, targets), 0, m - 1)
    left = np.clip(right - 1, 0, m - 1)
    pick = np.where(np.abs(cum[left] - targets) <= np.abs(cum[right] - targets), left, right)
    return np.unique(pick)


def compare_numeric_profiles(
    reference: NumericProfile, current: NumericProfile, *, coarse_bins: int = 10
) -> NumericComparison:
    """A :class:`NumericComparison` from two profiles on the same reference bins, with error bounds."""
    if reference.edges is None or current.edges is None or not np.array_equal(reference.edges, current.edges):
        raise UsageError(
            "the current profile was not built on the reference's bins; "
            "build it with Profile.from_table(current, reference=reference_profile)"
        )
    edges, r, ref_offsets = reference.bins()
    _, c, cur_offsets = current.bins()
    n, m = reference.count, current.count
    pooled = _pooled_std(reference, current)
    spread = spread_of(reference.std, pooled)
    groups = coarse_groups(r, coarse_bins)
    starts = np.concatenate(([0], groups + 1))
    coarse_ref = np.add.reduceat(r, starts) if r.size else r
    coarse_cur = np.add.reduceat(c, starts) if c.size else c
    coarse_edges = edges[groups] if groups.size else np.empty(0)
    if n == 0 or m == 0:
        return NumericComparison(n, m, 0.0, 0.0, spread, coarse_ref, coarse_cur, coarse_edges, ks_p_value=1.0)
    p, q = r / n, c / m
    below_p = np.concatenate(([0.0], np.cumsum(p)[:-1]))  # share strictly below each bin
    below_q = np.concatenate(([0.0], np.cumsum(q)[:-1]))
    h_left = below_p - below_q  # F - G just below each bin (at each edge, for bins 1..)
    lo = min(reference.minimum, current.minimum)
    hi = max(reference.maximum, current.maximum)
    if edges.size:
        lefts = np.concatenate(([min(lo, edges[0])], edges))
        rights = np.concatenate((edges, [max(hi, edges[-1])]))
        anchors = np.concatenate((edges[:1], edges))
    else:
        lefts, rights, anchors = np.array([lo]), np.array([hi]), np.zeros(1)
    width = rights - lefts
    reach = rights - anchors
    # A bin whose values all sit on its left edge (discrete data: one value per bin) has
    # F - G constant inside it, so it adds no error: evaluate it just after the edge.
    scale = np.abs(anchors) + width
    atom = (np.abs(ref_offsets) <= _ATOM_TOLERANCE * r * scale) & (
        np.abs(cur_offsets) <= _ATOM_TOLERANCE * c * scale
    )
    atom[0] = (r[0] == 0) & (c[0] == 0)  # the open lower bin holds values below its anchor
    h_after = h_left + p - q
    d = float(np.abs(h_left[1:]).max()) if edges.size else 0.0
    if atom.any():
        d = max(d, float(np.abs(h_after[atom]).max()))
    smooth = ~atom
    ks_error = float(np.maximum(p, q)[smooth].max()) if smooth.any() else 0.0
    # Exact integral of F - G over each bin: the share below times the width, plus the
    # part of the bin each value covers to the right of itself.
    inside = (r * reach - ref_offsets) / n - (c * reach - cur_offsets) / m
    signed = h_left * width + inside
    w = float(np.abs(signed).sum())
    room_up = np.maximum(h_left + p, 0.0)
    room_down = np.maximum(q - h_left, 0.0)
    w_error = float(np.sum((2.0 * width * np.minimum(room_up, room_down))[smooth]))
    return NumericComparison(
        n_reference=n,
        n_current=m,
        ks_distance=d,
        wasserstein=w,
        spread=spread,
        reference_bins=coarse_ref,
        current_bins=coarse_cur,
        bin_edges=coarse_edges,
        ks_error=ks_error,
        wasserstein_error=w_error,
        ks_p_value=ks_asymptotic_p_value(d, n, m),
    )


def _pooled_std(a: NumericProfile, b: NumericProfile) -> float:
    n = a.count + b.count
    if n == 0:
        return 0.0
    delta = b.mean - a.mean
    m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / n
    return math.sqrt(max(m2, 0.0) / n)


def compare_categorical_profiles(
    reference: CategoricalProfile, current: CategoricalProfile
) -> CategoricalComparison:
    """A :class:`CategoricalComparison` from two categorical profiles (exact)."""
    return compare_categorical(reference.with_missing(), current.with_missing())


__all__ = ["coarse_groups", "compare_categorical_profiles", "compare_numeric_profiles"]
