"""Schema inference, validation listing every violation, and the training-serving skew check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from evertrain.data.schema import Schema, check_skew, infer_schema, validate_table


def _reference(n: int = 2_000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "age": rng.integers(18, 90, n).astype(float),
            "income": rng.lognormal(10, 0.5, n),
            "plan": rng.choice(["basic", "pro", "team"], n),
            "note": [f"free text {i}" for i in range(n)],
        }
    )


def test_infer_schema(tmp_path: Path) -> None:
    schema = infer_schema(_reference())
    age = schema.columns["age"]
    assert (age.kind, age.minimum, age.maximum, age.missing_rate) == ("numeric", 18.0, 89.0, 0.0)
    assert schema.columns["plan"].categories == ["basic", "pro", "team"]
    assert schema.columns["note"].categories is None  # free text: too many values to be a code
    schema.save(tmp_path / "s.json")
    assert Schema.load(tmp_path / "s.json") == schema


def test_validate_lists_every_violation_by_column() -> None:
    schema = infer_schema(_reference())
    rng = np.random.default_rng(1)
    n = 500
    age = rng.integers(18, 90, n).astype(float)
    age[:3] = [-5.0, 250.0, 300.0]
    age[3:200] = np.nan
    batch = pa.table(
        {
            "age": age,
            "income": ["n/a"] * n,
            "plan": ["basic"] * (n - 7) + ["enterprise"] * 5 + ["vip"] * 2,
            "extra": [1] * n,
        }
    )
    report = validate_table(batch, schema)
    rules = {(v.column, v.rule) for v in report.violations}
    assert ("age", "range") in rules and ("age", "missing_rate") in rules
    assert ("income", "type") in rules
    assert ("plan", "category") in rules
    assert ("note", "missing_column") in rules
    assert ("extra", "unexpected_column") in rules
    assert not report.ok
    by = report.by_column()
    age_range = next(v for v in by["age"] if v.rule == "range")
    assert age_range.count == 3 and age_range.examples == [-5.0, 250.0, 300.0]
    plan = by["plan"][0]
    assert plan.count == 7 and plan.examples == ["enterprise", "vip"]
    assert by["income"][0].examples == ["n/a"]
    assert report.to_dict()["n_errors"] == len(report.errors) == 5  # the extra column is a warning
    assert validate_table(
        _reference(500, seed=2).drop_columns(["note"]), infer_schema(_reference().drop_columns(["note"]))
    ).ok


def test_training_serving_skew() -> None:
    train = _reference()
    rng = np.random.default_rng(3)
    serving = _reference(seed=4).set_column(1, "income", pa.array(rng.lognormal(10.5, 0.5, 2_000)))
    skew = check_skew(train, serving)
    assert not skew.ok
    assert skew.drift.drifted_columns == ["income"]
    assert {v.column for v in skew.validation.errors} <= {"income"}
    assert check_skew(train, _reference(seed=5)).ok
