"""The KS survival function evaluated without scipy.stats equals scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evertrain.monitor.kolmogorov import kstwo_sf


@pytest.mark.parametrize("n", [141.0, 5_000.0, 100_001.0, 500_000.0, 2_000_000.0])
def test_kstwo_sf_equals_scipy(n: float) -> None:
    # Distances from "no difference" to "certainly different", both formulas and the edges.
    for d in [*np.geomspace(2e-4, 0.45, 25), 1.2 / n, 0.6]:
        if n <= 100_000 and n * d**1.5 <= 1.4 and n * d * d < 2.2:
            continue  # scipy's own slow matrix method: kstwo_sf hands these to scipy anyway
        assert kstwo_sf(float(d), n) == pytest.approx(float(stats.kstwo.sf(d, n)), rel=1e-12, abs=1e-15)


def test_kstwo_sf_edges() -> None:
    assert kstwo_sf(0.0, 1000.0) == 1.0
    assert kstwo_sf(1.0, 1000.0) == 0.0
    assert np.isnan(kstwo_sf(0.1, 10.5))
    assert kstwo_sf(0.3, 50.0) == pytest.approx(float(stats.kstwo.sf(0.3, 50.0)))
