"""The registered tests equal scipy's on random inputs, NaN and constant columns included."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from evertrain.monitor import drift
from evertrain.monitor.tests import (
    available_tests,
    chi_square,
    compare_categorical,
    compare_numeric,
    finite_values,
    jensen_shannon_distance,
)

# Values from a small pool make ties common; NaN stands for missing.
POOL = [-3.5, -1.0, 0.0, 0.25, 1.0, 2.0, 7.5, 1e3, float("nan")]
values = st.one_of(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=60),
    st.lists(
        st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.just(float("nan"))), min_size=1, max_size=60
    ),
)
SETTINGS = settings(max_examples=150, deadline=None)


def _finite_pair(a: list[float], b: list[float]) -> tuple[np.ndarray, np.ndarray] | None:
    x, _ = finite_values(np.array(a))
    y, _ = finite_values(np.array(b))
    return (x, y) if x.size and y.size else None


def _scipy_ks(x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        # scipy warns when its exact p-value fails and it switches to asymptotic, as ours does.
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.ks_2samp(x, y)


@SETTINGS
@given(values, values)
def test_ks_equals_scipy(a: list[float], b: list[float]) -> None:
    pair = _finite_pair(a, b)
    if pair is None:
        return
    x, y = pair
    ours = compare_numeric(x, y)
    ref = _scipy_ks(x, y)
    assert ours.ks_distance == pytest.approx(ref.statistic, abs=1e-12)
    assert ours.ks_p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)


@SETTINGS
@given(values, values)
def test_wasserstein_equals_scipy(a: list[float], b: list[float]) -> None:
    pair = _finite_pair(a, b)
    if pair is None:
        return
    x, y = pair
    assert compare_numeric(x, y).wasserstein == pytest.approx(
        stats.wasserstein_distance(x, y), rel=1e-9, abs=1e-9
    )


counts = st.lists(st.integers(min_value=0, max_value=500), min_size=2, max_size=12)


@SETTINGS
@given(counts, counts)
def test_chi_square_equals_scipy(r: list[int], c: list[int]) -> None:
    k = min(len(r), len(c))
    ref, cur = np.array(r[:k]), np.array(c[:k])
    table = np.vstack((ref, cur))
    table = table[:, table.sum(axis=0) > 0]
    stat, p, dof = chi_square(ref, cur)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        assert (stat, p) == (0.0, 1.0)
        return
    expected = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
    assert p == pytest.approx(expected.pvalue, rel=1e-7, abs=1e-12)
    assert dof == expected.dof


@SETTINGS
@given(counts, counts)
def test_jensen_shannon_equals_scipy(r: list[int], c: list[int]) -> None:
    k = min(len(r), len(c))
    ref, cur = np.array(r[:k], dtype=float), np.array(c[:k], dtype=float)
    if ref.sum() == 0 or cur.sum() == 0:
        return
    assert jensen_shannon_distance(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-7)


@SETTINGS
@given(values, values)
def test_drift_on_tables_equals_scipy_and_counts_missing(a: list[float], b: list[float]) -> None:
    """Through the public API: the same numbers, with missing values counted, not dropped silently."""
    pair = _finite_pair(a, b)
    if pair is None:
        return
    x, y = pair
    report = drift(pa.table({"x": np.array(a)}), pa.table({"x": np.array(b)}))
    col = report.columns["x"]
    assert col.statistic == pytest.approx(_scipy_ks(x, y).statistic, abs=1e-12)
    assert col.tests["wasserstein"].details["distance"] == pytest.approx(
        stats.wasserstein_distance(x, y), rel=1e-9, abs=1e-9
    )
    assert col.missing.reference == sum(math.isnan(v) for v in a)
    assert col.missing.current == sum(math.isnan(v) for v in b)


def test_constant_columns() -> None:
    same = compare_numeric(np.full(50, 3.0), np.full(70, 3.0))
    assert (same.ks_distance, same.wasserstein, same.ks_p_value) == (0.0, 0.0, 1.0)
    apart = compare_numeric(np.full(50, 3.0), np.full(70, 4.0))
    assert apart.ks_distance == 1.0
    assert apart.wasserstein == pytest.approx(stats.wasserstein_distance(np.full(50, 3.0), np.full(70, 4.0)))
    assert apart.spread > 0  # the reference is constant: the pooled spread normalises instead
    report = drift(pa.table({"k": np.full(500, 3.0)}), pa.table({"k": np.full(500, 4.0)}))
    assert report.drifted_columns == ["k"]


def test_every_registered_test_runs_on_shared_inputs() -> None:
    """Conformance: each registered test returns a finite statistic and a p-value in [0, 1] or None."""
    rng = np.random.default_rng(0)
    numeric = compare_numeric(rng.normal(size=300), rng.normal(0.3, 1, size=200))
    categorical = compare_categorical({"a": 50, "b": 30, "c": 1}, {"a": 20, "b": 40, "d": 5})
    for test in available_tests():
        comparison = numeric if test.kind == "numeric" else categorical
        result = test(comparison)
        assert math.isfinite(result.statistic), test.name
        assert test.default_threshold > 0 and test.reason, test.name
        if test.role == "significance":
            assert result.p_value is not None and 0.0 <= result.p_value <= 1.0, test.name
        else:
            assert result.p_value is None, test.name
