"""Profiles merge exactly, serialise losslessly, and their drift tests stay within the stated bounds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evertrain.exceptions import DataValidationError, UsageError
from evertrain.monitor import Profile, drift
from evertrain.monitor.binning import Binner, choose_edges
from evertrain.monitor.profile_compare import compare_numeric_profiles
from evertrain.monitor.scenario import make_scenario
from evertrain.monitor.tests import compare_numeric, finite_values


def _windows(n: int = 30_000) -> tuple[pa.Table, pa.Table, pa.Table]:
    ref = make_scenario(n, seed=1, drifted=False)
    day1 = make_scenario(n // 3, seed=2, drifted=True)
    day2 = make_scenario(n // 2, seed=3, drifted=False)
    return ref, day1, day2


def test_merge_is_exact() -> None:
    ref, day1, day2 = _windows()
    reference = Profile.from_table(ref)
    merged = Profile.from_table(day1, reference=reference) + Profile.from_table(day2, reference=reference)
    whole = Profile.from_table(pa.concat_tables([day1, day2]), reference=reference)
    assert merged.n_rows == whole.n_rows
    for name, a in merged.columns.items():
        b = whole.columns[name]
        assert (a.count, a.missing) == (b.count, b.missing), name
        if a.kind == "numeric":
            assert np.array_equal(a.bin_counts, b.bin_counts), name
            assert (a.minimum, a.maximum) == (b.minimum, b.maximum), name
            assert a.mean == pytest.approx(b.mean, rel=1e-12, abs=1e-12), name
            assert a.m2 == pytest.approx(b.m2, rel=1e-9), name
            assert np.allclose(a.bin_offsets, b.bin_offsets, rtol=1e-9, atol=1e-6), name
            assert a.sketch.n == b.sketch.n == a.count, name
        else:
            assert a.counts == b.counts, name
    # Verdicts from merged windows equal those from the rows.
    assert drift(reference, merged).to_dict()["drifted_columns"] == drift(reference, whole).drifted_columns


def test_serialisation_round_trip(tmp_path) -> None:
    ref, day1, _ = _windows(6_000)
    reference = Profile.from_table(ref)
    path = tmp_path / "reference.profile.json"
    reference.save(path)
    loaded = Profile.load(path)
    assert drift(loaded, day1).to_dict() == drift(reference, day1).to_dict()
    q = loaded.columns["num_normal_0"].quantiles([0.5])[0]
    assert abs(q - np.median(ref.column("num_normal_0").to_numpy())) < 0.1
    with pytest.raises(DataValidationError, match="not an evertrain profile"):
        Profile.from_bytes(b'{"format": "something else"}')


def test_profiles_on_different_bins_refuse_to_merge() -> None:
    ref, day1, _ = _windows(6_000)
    with pytest.raises(UsageError, match="different reference bins"):
        Profile.from_table(ref) + Profile.from_table(day1)


DISTRIBUTIONS = {
    "normal": lambda r, n, d: r.normal(0.2 * d, 1 + 0.3 * d, n),
    "lognormal": lambda r, n, d: r.lognormal(0.1 * d, 1.5, n),
    "cauchy": lambda r, n, d: r.standard_cauchy(n) + d,
    "poisson": lambda r, n, d: r.poisson(4 + d, n).astype(float),
    "rounded": lambda r, n, d: np.round(r.normal(d * 0.1, 1, n), 1),
    "bimodal": lambda r, n, d: np.where(r.random(n) < 0.5 + 0.1 * d, r.normal(-3, 1, n), r.normal(3, 0.5, n)),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("shift", [0, 1])
def test_profile_distances_within_stated_bounds(name: str, shift: int) -> None:
    rng = np.random.default_rng(hash((name, shift)) % 2**32)
    make = DISTRIBUTIONS[name]
    a, b = make(rng, 40_000, 0), make(rng, 25_000, shift)
    exact = compare_numeric(a, b)
    ref = Profile.from_table(pa.table({"x": a}))
    approx = compare_numeric_profiles(
        ref.columns["x"], Profile.from_table(pa.table({"x": b}), reference=ref).columns["x"]
    )
    tol = 1e-9
    assert approx.ks_distance <= exact.ks_distance + tol
    assert exact.ks_distance - approx.ks_distance <= approx.ks_error + tol
    scale = max(exact.wasserstein, 1.0)
    assert approx.wasserstein <= exact.wasserstein + tol * scale
    assert exact.wasserstein - approx.wasserstein <= approx.wasserstein_error + tol * scale
    if not shift:
        assert approx.ks_error <= 0.01  # a thousand fine bins: about 0.1% of the data each


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e4, max_value=1e4), min_size=2, max_size=300),
    st.lists(st.floats(min_value=-2e4, max_value=2e4), min_size=1, max_size=500),
    st.sampled_from([0.0, 1e3, 1e9, 1e12, -1e15]),
    st.sampled_from([1.0, 1e-6]),
)
def test_binner_equals_binary_search(
    edge_values: list[float], xs: list[float], offset: float, scale: float
) -> None:
    edges = np.unique(offset + scale * np.array(edge_values))
    x = offset + scale * np.array(xs)
    assert np.array_equal(Binner(edges)(x), np.searchsorted(edges, x, side="right"))


def test_binner_on_heavy_tails_and_far_apart_modes() -> None:
    rng = np.random.default_rng(3)
    for x in (
        rng.lognormal(0, 3, 200_000),
        rng.standard_cauchy(200_000),
        np.concatenate([rng.normal(0, 1, 100_000), rng.normal(1e6, 1, 100_000)]),
        1e12 + rng.normal(0, 1e-3, 200_000),  # far from zero, narrow: no fused multiply-add
    ):
        finite, _ = finite_values(x)
        edges = choose_edges(finite)
        assert np.array_equal(Binner(edges)(finite), np.searchsorted(edges, finite, side="right"))


def test_binner_on_edges_closer_than_a_grid_can_resolve() -> None:
    # Edges a subnormal apart (hypothesis found it): the grid's scale overflows to
    # infinity, so the binner must fall back to binary search instead of warning.
    edges = np.array([0.0, 5e-324])
    x = np.array([0.0, 5e-324, -1.0, 1.0])
    assert np.array_equal(Binner(edges)(x), np.searchsorted(edges, x, side="right"))
