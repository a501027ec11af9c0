"""Artifacts, logs and a Parquet warehouse on a real S3 server: fresh listings, storage options,
errors that name the URL, a writer that loses no row when the server is cut off."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scalekit import BUCKET, Relay

from evertrain.data import logs
from evertrain.data.sources import CsvSource, ParquetSource
from evertrain.exceptions import DataValidationError, StoreError
from evertrain.store import storage
from evertrain.store.artifacts import ArtifactStore

T0 = 1_800_000_000.0


def _rows(start: int, n: int, ts: float = T0) -> tuple[dict[str, list[object]], dict[str, str]]:
    cols: dict[str, list[object]] = {
        "request_id": [f"r{start + i}" for i in range(n)],
        "ts": [ts + (start + i) * 0.01 for i in range(n)],
        "model_version": [1] * n,
        "arm": ["champion"] * n,
        "prediction": [1.0] * n,
        "x": [float(i) for i in range(n)],
    }
    return cols, {**{k: v for k, v in logs.PREDICTION_COLUMNS.items() if k in cols}, "x": "float64"}


def test_artifacts_on_s3_round_trip_and_a_dead_server_is_a_store_error_naming_the_url(s3: Relay) -> None:
    store = ArtifactStore(f"s3://{BUCKET}/artifacts")
    digest = store.put(b"model bytes")
    assert store.get(digest) == b"model bytes" and store.exists(digest)
    s3.cut()
    try:
        with pytest.raises(StoreError) as err:
            ArtifactStore(f"s3://{BUCKET}/artifacts").get(digest)
    finally:
        s3.restore()
    assert f"s3://{BUCKET}/artifacts" in str(err.value)
    assert "connect" in str(err.value).lower()


def test_storage_options_come_from_the_project_file_and_the_environment_overlays_them(
    s3: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = json.loads(storage.settings.STORAGE_OPTIONS.raw() or "{}")["s3"]["endpoint_url"]
    monkeypatch.setenv("EVERTRAIN_STORAGE_OPTIONS", json.dumps({"s3": {"key": "test", "secret": "test"}}))
    storage.configure({"s3": {"endpoint_url": endpoint, "key": "wrong"}})
    assert storage.options_for("s3") == {"endpoint_url": endpoint, "key": "test", "secret": "test"}
    digest = ArtifactStore(f"s3://{BUCKET}/a").put(b"x")  # reaches the server through the merged options
    assert len(digest) == 64
    monkeypatch.setenv("EVERTRAIN_STORAGE_OPTIONS", "{not json")
    with pytest.raises(Exception, match="EVERTRAIN_STORAGE_OPTIONS: not valid JSON"):
        storage.options_for("s3")


def test_a_long_lived_reader_sees_parts_written_after_its_first_listing(s3: Relay, spool: Path) -> None:
    url = f"s3://{BUCKET}/logs"
    writer = logs.LogWriter(url)
    total = 0
    for _ in range(4):
        cols, types = _rows(total, 50)
        writer.offer(logs.PREDICTIONS, "m", cols, types, 50)
        writer.flush()
        total += 50
        # the same process reads after every write: each new part must be seen at once
        assert logs.read_log(url, logs.PREDICTIONS, "m").num_rows == total
    writer.close()


def test_a_warehouse_of_parquet_and_csv_on_s3_is_read_by_glob_and_new_files_are_seen(s3: Relay) -> None:
    fs, _ = storage.open_fs(f"s3://{BUCKET}")
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    with fs.open(f"{BUCKET}/warehouse/day=1/part-0.parquet", "wb") as fh:
        pq.write_table(pa.Table.from_pandas(frame), fh)
    source = ParquetSource(f"s3://{BUCKET}/warehouse/*/*.parquet")
    assert len(source.read()) == 2
    with fs.open(f"{BUCKET}/warehouse/day=2/part-0.parquet", "wb") as fh:
        pq.write_table(pa.Table.from_pandas(frame), fh)
    assert len(source.read()) == 4  # the second file, written after the first read, is found
    assert len(ParquetSource(f"s3://{BUCKET}/warehouse").read()) == 4  # a folder: every part below it
    fs.pipe_file(f"{BUCKET}/csv/a.csv", b"x,y\n1,0\n2,1\n")
    assert len(CsvSource(f"s3://{BUCKET}/csv/*.csv").read()) == 2
    with pytest.raises(DataValidationError, match="no Parquet files found"):
        ParquetSource(f"s3://{BUCKET}/nothing/*.parquet").read()


def test_the_writer_retries_spools_while_the_server_is_cut_off_and_drains_after(
    s3: Relay, spool: Path
) -> None:
    url = f"s3://{BUCKET}/logs"
    writer = logs.LogWriter(url, flush_seconds=0.05)
    writer.start()
    sent = 0
    s3.cut()
    try:
        for _ in range(5):
            cols, types = _rows(sent, 20)
            assert writer.offer(logs.PREDICTIONS, "m", cols, types, 20)
            labels = {"request_id": cols["request_id"][:5], "label": [1.0] * 5, "ts": [T0 + 100.0] * 5}
            ltypes = {"request_id": "string", "label": "float64", "ts": "float64"}
            # a label is on local disk once offer returns: that is what a 200 promises
            assert writer.offer(logs.FEEDBACK, "m", labels, ltypes, 5)
            sent += 20
            time.sleep(0.2)
        assert writer.flush(30)
        assert writer.spooled() == 125  # nothing written, nothing lost
        assert writer.spooled_rows[logs.PREDICTIONS] == 100
    finally:
        s3.restore()
    deadline = time.monotonic() + 60
    while writer.spooled() and time.monotonic() < deadline:
        time.sleep(0.2)
    writer.close()
    assert writer.spooled() == 0
    assert writer.drained_rows[logs.PREDICTIONS] == 100 and writer.drained_rows[logs.FEEDBACK] == 25
    predictions = logs.read_log(url, logs.PREDICTIONS, "m")
    assert sorted(predictions["request_id"].to_pylist()) == sorted(f"r{i}" for i in range(sent))
    assert logs.read_log(url, logs.FEEDBACK, "m").num_rows == 25
    assert not [p for p in spool.rglob("*") if p.name.endswith(".tmp")]


def test_a_row_that_cannot_be_stored_is_set_aside_and_its_batch_is_written(
    tmp_path: Path, spool: Path
) -> None:
    url = str(tmp_path / "logs")
    writer = logs.LogWriter(url)
    cols, types = _rows(0, 10)
    cols["request_id"][3] = "bad\ud800id"  # a lone surrogate: not valid Unicode, cannot be stored
    writer.offer(logs.PREDICTIONS, "m", cols, types, 10)
    writer.close()
    assert logs.read_log(url, logs.PREDICTIONS, "m").num_rows == 9
    assert writer.set_aside_rows[logs.PREDICTIONS] == 1
    kept = [json.loads(line) for f in (spool.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(kept) == 1 and "surrogates not allowed" in kept[0]["reason"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_compaction_on_s3_while_a_writer_writes_keeps_every_row_once(s3: Relay, spool: Path) -> None:
    url = f"s3://{BUCKET}/logs"
    writer = logs.LogWriter(url, flush_seconds=0.02)
    writer.start()
    sent = 0
    for _ in range(15):
        cols, types = _rows(sent, 10)
        writer.offer(logs.PREDICTIONS, "m", cols, types, 10)
        writer.flush()
        sent += 10
    result = logs.compact(url, small_rows=1000)
    for _ in range(5):  # writing goes on after (and while) the compaction
        cols, types = _rows(sent, 10)
        writer.offer(logs.PREDICTIONS, "m", cols, types, 10)
        sent += 10
    writer.close()
    assert result.parts_before >= 15 and result.written and result.deleted >= 15
    ids = logs.read_log(url, logs.PREDICTIONS, "m")["request_id"].to_pylist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(sent))  # each row once
    assert logs.count_rows(url, logs.PREDICTIONS, "m") == sent
