"""The public API: table types, the JSON report contract, the registry, the HTML report."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import evertrain
from evertrain.exceptions import DataValidationError, UsageError
from evertrain.faces.report_drift import render_drift_html
from evertrain.monitor import available_tests, drift, get_test
from evertrain.monitor.scenario import DRIFTED, make_scenario


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"x": rng.normal(size=4000), "c": rng.choice(["a", "b", "c"], 4000), "y": rng.integers(0, 2, 4000)}
    )
    cur = pd.DataFrame(
        {
            "x": rng.normal(0.4, 1, size=3000),
            "c": rng.choice(["a", "b", "c"], 3000),
            "y": rng.integers(0, 2, 3000),
        }
    )
    return ref, cur


def test_pandas_polars_and_arrow_give_one_answer() -> None:
    polars = pytest.importorskip("polars")
    ref, cur = _frames()
    answers = [
        drift(ref, cur).to_dict(),
        drift(pa.Table.from_pandas(ref), pa.Table.from_pandas(cur)).to_dict(),
        drift(polars.from_pandas(ref), polars.from_pandas(cur)).to_dict(),
    ]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["drifted_columns"] == ["x"]


def test_report_follows_the_contract() -> None:
    ref, cur = _frames()
    d = drift(ref, cur, target="y", correction="bonferroni").to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN or Infinity
    assert json.loads(text) == d
    for key in ("columns", "drifted_columns", "share_drifted", "dataset_drift", "n_reference", "n_current"):
        assert key in d
    assert d["correction"] == {"method": "bonferroni", "alpha": 0.01, "hypotheses": 3}
    assert set(d["columns"]) == {"x", "c"} and d["target"]["name"] == "y"
    for col in d["columns"].values():
        for key in ("kind", "method", "statistic", "p_value", "effect_size", "threshold", "drifted"):
            assert key in col
    assert (d["n_reference"], d["n_current"]) == (4000, 3000)


def test_methods_and_thresholds_can_be_chosen() -> None:
    ref, cur = _frames()
    report = drift(ref, cur, methods={"numeric": ("ks", "psi")}, thresholds={"psi": 10.0})
    assert report.columns["x"].method == "ks+psi" and not report.columns["x"].drifted
    with pytest.raises(
        UsageError, match="no drift test 'nope' for numeric columns; known: jensen_shannon, ks"
    ):
        drift(ref, cur, methods={"numeric": ("ks", "nope")})
    with pytest.raises(UsageError, match="must be a significance test"):
        drift(ref, cur, methods={"numeric": ("psi", "ks")})


def test_registry_lists_tests_by_kind() -> None:
    names = {(t.kind, t.name) for t in available_tests()}
    assert {
        ("numeric", "ks"),
        ("numeric", "wasserstein"),
        ("numeric", "psi"),
        ("numeric", "jensen_shannon"),
    } <= names
    assert {("categorical", "chi_square"), ("categorical", "new_categories")} <= names
    assert get_test("new_categories", "categorical").default_threshold == 0.01


def test_bad_inputs_name_the_column_and_the_value() -> None:
    ref, cur = _frames()
    with pytest.raises(DataValidationError, match=r"current: no column named 'c'"):
        drift(ref, cur.drop(columns=["c"]))
    bad = cur.assign(x=["n/a"] * len(cur))
    with pytest.raises(DataValidationError, match=r"column 'x' in current: expected numeric .* \('n/a'"):
        drift(ref, bad)
    with pytest.raises(DataValidationError, match="current has no rows"):
        drift(ref, cur.iloc[:0])
    with pytest.raises(DataValidationError, match="column 'x' in current: all 3000 values are missing"):
        drift(ref, cur.assign(x=np.nan))
    with pytest.raises(UsageError, match="expected a pyarrow Table"):
        drift([1, 2, 3], cur)


def test_public_names_are_sorted_and_importable() -> None:
    assert evertrain.__all__ == sorted(evertrain.__all__)
    for name in evertrain.__all__:
        assert hasattr(evertrain, name), name
    for name in ("drift", "Profile", "profile", "PerformanceEstimator", "infer_schema", "validate_table"):
        assert name in evertrain.__all__


def test_html_report_is_self_contained_and_sorted_by_effect() -> None:
    report = drift(make_scenario(5_000, seed=1, drifted=False), make_scenario(5_000, seed=2, drifted=True))
    page = render_drift_html(report, title="t")
    assert page.count("<svg") == len(report.columns)
    urls = set(re.findall(r"https?://[^\s\"']+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}  # the SVG namespace is a name, not a fetch
    assert "<script" not in page and "<link" not in page
    order = [m for m in re.findall(r"<h2><span>([^<]+)</span>", page)]
    assert set(order[:5]) == set(DRIFTED)
