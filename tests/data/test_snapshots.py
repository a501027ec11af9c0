"""Snapshots: content-addressed, recorded once, with schema, time range and sources."""

from __future__ import annotations

import pandas as pd

from evertrain.data.snapshots import (
    SNAPSHOT_MAX_CATEGORIES,
    describe_columns,
    get_snapshot,
    load_snapshot,
    take_snapshot,
)
from evertrain.store import Store


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": [10.0, 20.0, 30.0],
            "when": pd.to_datetime(["2026-01-01", "2026-01-02", None]),
            "region": ["north", "west", "north"],
            "spend": [1.5, None, 3.0],
            "vip": [True, False, True],
            "note": [f"n{i}" for i in range(3)],
        }
    )


def test_same_table_same_snapshot_recorded_once(store: Store) -> None:
    first = take_snapshot(store, _table(), sources=["csv:a.csv"], time_column="ts")
    again = take_snapshot(store, _table(), sources=["csv:b.csv"], time_column="ts")
    assert first.id == again.id
    assert get_snapshot(store, first.id).sources == ["csv:a.csv", "csv:b.csv"]
    assert (first.n_rows, first.time_min, first.time_max) == (3, 10.0, 30.0)
    pd.testing.assert_frame_equal(load_snapshot(store, first.id), _table())
    changed = take_snapshot(store, _table().assign(spend=[1.0, 2.0, 3.0]))
    assert changed.id != first.id
    assert store.artifacts.get(first.id)  # the id is the artifact's address


def test_schema_shape_serving_validates_against() -> None:
    schema = describe_columns(_table())["columns"]
    assert schema["ts"] == {"type": "numeric", "nullable": False, "min": 10.0, "max": 30.0}
    assert schema["when"]["type"] == "timestamp" and schema["when"]["nullable"] is True
    assert schema["region"] == {"type": "categorical", "nullable": False, "categories": ["north", "west"]}
    assert schema["spend"]["nullable"] is True
    assert schema["vip"] == {"type": "boolean", "nullable": False}
    many = pd.DataFrame({"text": [f"v{i}" for i in range(SNAPSHOT_MAX_CATEGORIES + 1)]})
    assert describe_columns(many)["columns"]["text"] == {"type": "string", "nullable": False}
