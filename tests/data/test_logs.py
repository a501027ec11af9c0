"""The logs' one reader reads back what the writer wrote: bounds, days, columns, differing types."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from evertrain.data import logs

DAY = 86400.0
T0 = 20_000 * DAY  # midnight UTC


def write(url: str, kind: str, rows: dict[str, list[object]], types: dict[str, str]) -> None:
    writer = logs.LogWriter(url)
    writer.offer(kind, "m", rows, types, len(rows["ts"]))
    writer.close()


def predictions(url: str, ts: list[float], prediction: list[object], kind: str = "float64") -> None:
    n = len(ts)
    rows = {
        "request_id": [f"r{t - T0:.0f}" for t in ts],
        "ts": ts,
        "model_version": [1] * n,
        "arm": ["champion"] * n,
        "prediction": prediction,
    }
    types = {**logs.PREDICTION_COLUMNS, "prediction": kind}
    write(url, logs.PREDICTIONS, rows, {k: v for k, v in types.items() if k in rows})


def test_bounds_days_and_columns(tmp_path: Path) -> None:
    url = str(tmp_path / "logs")
    predictions(url, [T0 + 10, T0 + 20, T0 + DAY + 5], [1.0, 0.0, 1.0])
    assert logs.read_log(url, logs.PREDICTIONS, "m", since=T0 + 10, until=T0 + DAY + 5)["ts"].to_pylist() == [
        T0 + 20,
        T0 + DAY + 5,
    ]
    window = logs.read_log(url, logs.PREDICTIONS, "m", since=T0 + 10, until=T0 + DAY + 5, inclusive="left")
    assert window["ts"].to_pylist() == [T0 + 10, T0 + 20]
    first_day = logs.read_log_parts(url, logs.PREDICTIONS, "m", last_date=logs.partition_date(T0))
    assert sum(t.num_rows for t in first_day) == 2
    only = logs.read_log(url, logs.PREDICTIONS, "m", columns=["ts", "no_such_column"])
    assert only.column_names == ["ts"]
    empty = logs.read_log(url, logs.FEEDBACK, "m")
    assert empty.num_rows == 0 and empty.column_names == ["ts"]


def test_parts_with_different_types_join_as_text(tmp_path: Path) -> None:
    url = str(tmp_path / "logs")
    predictions(url, [T0 + 1], [1.0])
    predictions(url, [T0 + 2], ["yes"], kind="string")
    parts = logs.read_log_parts(url, logs.PREDICTIONS, "m")
    assert sorted(str(p.schema.field("prediction").type) for p in parts) == ["double", "string"]
    table = logs.read_log(url, logs.PREDICTIONS, "m")
    assert table.schema.field("prediction").type == pa.string()
    assert table["prediction"].to_pylist() == ["1", "yes"]


def test_labelled_joins_the_newest_label_that_had_arrived(tmp_path: Path) -> None:
    url = str(tmp_path / "logs")
    predictions(url, [T0 + 1, T0 + 2], [1.0, 0.0])
    write(
        url,
        logs.FEEDBACK,
        {
            "request_id": ["r1", "r1", "r2"],
            "label": [0.0, 1.0, 0.0],
            "ts": [T0 + 3, T0 + 4, T0 + 9],
        },
        logs.FEEDBACK_COLUMNS,
    )
    joined = logs.labelled(url, "m", at=T0 + 5)
    assert joined["request_id"].to_pylist() == ["r1"]
    assert joined["label"].to_pylist() == [1.0]
