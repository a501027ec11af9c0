"""The acceptance scenario, scaled down: 20 clean and 5 drifted columns.

bench/acceptance.py runs it in full (20 seeds at 1,000,000 and 10,000 rows).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from evertrain.monitor import Profile, drift
from evertrain.monitor.scenario import DRIFTED, make_scenario


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_ten_thousand_rows_flags_the_five_and_nothing_else(seed: int) -> None:
    report = drift(
        make_scenario(10_000, seed=seed, drifted=False), make_scenario(10_000, seed=seed + 100, drifted=True)
    )
    assert report.exact
    assert sorted(report.drifted_columns) == sorted(DRIFTED)
    assert report.dataset_drift
    assert report.share_drifted == pytest.approx(5 / 25)


def test_million_rows_of_one_distribution_flag_nothing_and_drift_is_found() -> None:
    ref = make_scenario(1_000_000, seed=1, drifted=False)
    same = make_scenario(1_000_000, seed=2, drifted=False)
    report = drift(ref, same)
    assert not report.exact  # the profiled path, with its error bounds in the report
    assert report.drifted_columns == []
    assert not report.dataset_drift
    # Significance alone would flag: KS finds something in some clean columns, the effect size does not.
    assert max(c.effect_size / c.threshold for c in report.columns.values()) < 0.5
    profile = Profile.from_table(ref, sketch=False)
    drifted = drift(profile, make_scenario(1_000_000, seed=3, drifted=True))
    assert sorted(drifted.drifted_columns) == sorted(DRIFTED)


def test_no_drift_reports_rarely_raise_a_false_alarm() -> None:
    false_flags = 0
    for seed in range(10):
        ref = make_scenario(2_000, seed=1000 + seed, drifted=False)
        cur = make_scenario(2_000, seed=2000 + seed, drifted=False)
        false_flags += len(drift(ref, cur).drifted_columns)
    assert false_flags <= 1


def test_small_sample_with_a_large_shift_is_caught() -> None:
    rng = np.random.default_rng(5)
    ref = pa.table({"x": rng.normal(size=60)})
    cur = pa.table({"x": rng.normal(1.5, 1, size=40)})
    assert drift(ref, cur).drifted_columns == ["x"]


def test_missing_values_are_counted_and_can_drift() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=5000)
    y = rng.normal(size=5000)
    y[:1500] = np.nan
    col = drift(pa.table({"x": x}), pa.table({"x": y})).columns["x"]
    assert (col.missing.reference, col.missing.current) == (0, 1500)
    assert col.missing.current_share == pytest.approx(0.3)
    assert col.missing.drifted and col.drifted
    assert col.n_current == 3500  # the distribution tests see the values that are there
