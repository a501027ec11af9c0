"""The KS p-value evaluated without scipy.stats agrees with scipy's exact distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evertrain.monitor.kolmogorov import ASYMPTOTIC_N, kstwo_sf


@pytest.mark.parametrize("n", [float(ASYMPTOTIC_N), 400_000.0])
def test_large_samples_are_within_two_percent_of_the_exact_p_value(n: float) -> None:
    # Distances whose exact p-values span "no difference" to 1e-12.
    for p in np.geomspace(1e-12, 0.99, 12):  # the exact distribution is slow at these sizes
        d = float(stats.kstwo.isf(p, n))
        assert kstwo_sf(d, n) == pytest.approx(float(stats.kstwo.sf(d, n)), rel=0.02)


def test_the_same_decision_at_the_usual_levels() -> None:
    n = 250_000.0
    for level in (0.05, 0.01, 0.001):
        just_in = float(stats.kstwo.isf(level * 0.9, n))
        just_out = float(stats.kstwo.isf(level * 1.1, n))
        assert kstwo_sf(just_in, n) < level < kstwo_sf(just_out, n)


def test_small_samples_are_scipys_and_edges() -> None:
    assert kstwo_sf(0.05, 5_000.0) == float(stats.kstwo.sf(0.05, 5_000.0))
    assert kstwo_sf(0.3, 50.0) == pytest.approx(float(stats.kstwo.sf(0.3, 50.0)))
    assert kstwo_sf(0.0, 1000.0) == 1.0
    assert kstwo_sf(1.0, 1000.0) == 0.0
    assert np.isnan(kstwo_sf(0.1, 10.5))
