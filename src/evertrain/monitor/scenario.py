"""A generated drift scenario with known answers: 20 clean columns and 5 drifted ones.

Used by the tests, the benchmarks and the acceptance statistics, so all three judge
the monitor on the same data. Clean columns have varied shapes (normal, log-normal,
uniform, integer counts, 5% missing values, categorical of 2 to 50 levels); each
drifted column carries one kind of change:

==================== ==========================================================
``num_shift_0_1sd``  normal, mean moved by 0.1 standard deviation
``num_shift_1sd``    normal, mean moved by 1 standard deviation
``num_var_x1_5``     normal, variance multiplied by 1.5
``cat_new_5pct``     4 categories, a new one appears in 5% of rows
``cat_reweighted``   4 categories, shares 40/30/20/10% become 30/30/25/15%
==================== ==========================================================
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

DRIFTED = ("num_shift_0_1sd", "num_shift_1sd", "num_var_x1_5", "cat_new_5pct", "cat_reweighted")
_FOUR = np.array(["alpha", "beta", "gamma", "delta"])
_FOUR_P = np.array([0.4, 0.3, 0.2, 0.1])
_REWEIGHTED_P = np.array([0.3, 0.3, 0.25, 0.15])
NEW_CATEGORY_SHARE = 0.05
MISSING_SHARE = 0.05


def _categories(rng: np.random.Generator, labels: np.ndarray, p: np.ndarray, n: int) -> pa.Array:
    codes = rng.choice(labels.size, size=n, p=p).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(labels))


def make_scenario(n: int, *, seed: int, drifted: bool) -> pa.Table:
    """One table of ``n`` rows; with ``drifted=True`` the five drifted columns carry their change."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array | np.ndarray] = {}
    for i in range(5):
        cols[f"num_normal_{i}"] = rng.normal(10.0 * i, 1.0 + i, size=n)
    for i in range(3):
        cols[f"num_lognormal_{i}"] = rng.lognormal(0.0, 0.5 + 0.5 * i, size=n)
    for i in range(3):
        cols[f"num_uniform_{i}"] = rng.uniform(-i, 1.0 + i, size=n)
    for i in range(2):
        cols[f"num_count_{i}"] = rng.poisson(3.0 + 10 * i, size=n).astype(np.int64)
    for i in range(2):
        x = rng.normal(0.0, 1.0, size=n)
        x[rng.random(n) < MISSING_SHARE] = np.nan
        cols[f"num_missing_{i}"] = x
    for i, k in enumerate((2, 4, 10, 50, 7)):
        labels = np.array([f"c{j}" for j in range(k)])
        weights = np.arange(k, 0, -1, dtype=np.float64)
        cols[f"cat_clean_{i}"] = _categories(rng, labels, weights / weights.sum(), n)
    cols["num_shift_0_1sd"] = rng.normal(0.1 if drifted else 0.0, 1.0, size=n)
    cols["num_shift_1sd"] = rng.normal(1.0 if drifted else 0.0, 1.0, size=n)
    cols["num_var_x1_5"] = rng.normal(0.0, np.sqrt(1.5) if drifted else 1.0, size=n)
    if drifted:
        labels = np.append(_FOUR, "epsilon")
        p = np.append(_FOUR_P * (1 - NEW_CATEGORY_SHARE), NEW_CATEGORY_SHARE)
        cols["cat_new_5pct"] = _categories(rng, labels, p, n)
    else:
        cols["cat_new_5pct"] = _categories(rng, _FOUR, _FOUR_P, n)
    cols["cat_reweighted"] = _categories(rng, _FOUR, _REWEIGHTED_P if drifted else _FOUR_P, n)
    return pa.table(cols)


__all__ = ["DRIFTED", "make_scenario"]
