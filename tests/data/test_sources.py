"""Data sources: each kind reads what it names, and the log source joins feedback the documented way."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from evertrain.data.sources import (
    LOG_LABEL_TIME,
    CsvSource,
    DuckDBSource,
    LogSource,
    ParquetSource,
    SqlSource,
    open_source,
)
from evertrain.exceptions import DataValidationError
from evertrain.spec import SourceSpec


def _rows(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"t": range(start, start + n), "x": [float(i) for i in range(n)], "y": [i % 2 for i in range(n)]}
    )


def test_parquet_folder_and_glob(project: Path) -> None:
    (project / "data" / "a").mkdir(parents=True)
    _rows(0, 3).to_parquet(project / "data" / "a" / "part-0.parquet")
    _rows(3, 2).to_parquet(project / "data" / "part-1.parquet")
    assert len(ParquetSource("data", base=project).read()) == 5
    assert ParquetSource("data/*.parquet", base=project).read()["t"].tolist() == [3, 4]
    with pytest.raises(DataValidationError, match="no Parquet files"):
        ParquetSource("missing/*.parquet", base=project).read()


def test_csv_glob_is_read_in_name_order(project: Path) -> None:
    _rows(5, 2).to_csv(project / "b.csv", index=False)
    _rows(0, 2).to_csv(project / "a.csv", index=False)
    assert CsvSource("*.csv", base=project).read()["t"].tolist() == [0, 1, 5, 6]


def test_sql_query_through_sqlalchemy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    engine = sa.create_engine(url)
    _rows(0, 4).to_sql("rows", engine, index=False)
    engine.dispose()
    source = SqlSource(url, "SELECT t, x, y FROM rows WHERE t >= 2")
    assert source.read()["t"].tolist() == [2, 3]
    assert source.uri.startswith("sql:sqlite:///")


def test_duckdb_query_over_files(project: Path) -> None:
    pytest.importorskip("duckdb")
    _rows(0, 4).to_parquet(project / "rows.parquet")
    frame = DuckDBSource("SELECT * FROM 'rows.parquet' WHERE y = 1", base=project).read()
    assert frame["t"].tolist() == [1, 3]


def _write_log(root: Path, kind: str, model: str, date: str, frame: pd.DataFrame) -> None:
    folder = root / kind / f"model={model}" / f"date={date}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{uuid.uuid4().hex}.parquet"
    )


def test_log_source_joins_feedback_and_skips_shadow(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    predictions = pd.DataFrame(
        {
            "request_id": ["a", "b", "b", "c"],
            "ts": [10.0, 11.0, 11.0, 12.0],
            "model_version": [1, 1, 2, 1],
            "arm": ["champion", "champion", "shadow", "canary"],
            "latency_ms": [1.0, 1.0, 1.0, 1.0],
            "prediction": [0.0, 1.0, 0.0, 1.0],
            "score": [0.2, 0.7, 0.4, 0.9],
            "age": [30.0, 40.0, 40.0, 50.0],
        }
    )
    _write_log(logs, "predictions", "churn", "2026-01-01", predictions.iloc[:2])
    _write_log(logs, "predictions", "churn", "2026-01-02", predictions.iloc[2:])
    _write_log(logs, "predictions", "other", "2026-01-01", predictions.iloc[:1])
    feedback = pd.DataFrame(
        {"request_id": ["a", "b", "b", "zz"], "label": [1.0, 0.0, 1.0, 1.0], "ts": [20.0, 21.0, 30.0, 22.0]}
    )
    _write_log(logs, "feedback", "churn", "2026-01-02", feedback)
    frame = LogSource(str(logs), "churn", "churned").read()
    # c has no label yet; b's shadow copy is skipped; b labelled twice gives two rows.
    assert frame["request_id"].tolist() == ["a", "b", "b"]
    assert frame["churned"].tolist() == [1.0, 0.0, 1.0]
    assert frame[LOG_LABEL_TIME].tolist() == [20.0, 21.0, 30.0]
    assert set(frame["arm"]) == {"champion"}


def test_open_source_by_kind(project: Path) -> None:
    spec = SourceSpec(kind="log")
    source = open_source(spec, base=project, logs_url=str(project / "logs"), model="m", target="y")
    assert isinstance(source, LogSource)
    assert source.uri.endswith("predictions/model=m")
    with pytest.raises(DataValidationError, match="no prediction log"):
        source.read()
