"""Log compaction, time-pruned reads, stored project files and storage failures in the loop, on
local disk and SQLite (fast; the same code runs against S3 in the other tests here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evertrain.controller.clock import ManualClock
from evertrain.controller.context import CycleContext
from evertrain.controller.loop import STEPS, Controller
from evertrain.data import logs
from evertrain.spec import canonical_json, parse_spec, spec_from_json
from evertrain.store import Store

T0 = 1_800_000_000.0
SPEC = """\
model: {name: m, target: y}
data: {source: {kind: parquet, path: data.parquet}}
storage: {logs_url: shared/logs, compact_every: 2}
"""


def _write(url: str, n_parts: int, rows: int = 10, start: float = T0) -> None:
    writer = logs.LogWriter(url)
    for p in range(n_parts):
        cols = {
            "request_id": [f"r{p}-{i}" for i in range(rows)],
            "ts": [start + p * 60 + i for i in range(rows)],
            "model_version": [1] * rows,
            "arm": ["champion"] * rows,
            "prediction": [0.0] * rows,
        }
        types = {k: v for k, v in logs.PREDICTION_COLUMNS.items() if k in cols}
        writer.offer(logs.PREDICTIONS, "m", cols, types, rows)
        writer.flush()
    writer.close()


def _label_all(url: str, n_parts: int, at: float, rows: int = 10) -> None:
    """A label for every row :func:`_write` logged, all sent at ``at``."""
    writer = logs.LogWriter(url)
    ids = [f"r{p}-{i}" for p in range(n_parts) for i in range(rows)]
    cols = {"request_id": ids, "label": [1.0] * len(ids), "ts": [at] * len(ids)}
    writer.offer(
        logs.FEEDBACK, "m", cols, {"request_id": "string", "label": "float64", "ts": "float64"}, len(ids)
    )
    writer.close()


def test_a_compaction_that_died_before_deleting_leaves_no_row_twice_and_the_next_one_finishes(
    tmp_path: Path,
) -> None:
    url = str(tmp_path / "logs")
    _write(url, 6)
    folder = next(Path(url).rglob("date=*"))
    before = sorted(folder.glob("part-*.parquet"))
    saved = tmp_path / "saved"
    saved.mkdir()
    for f in before:
        shutil.copy(f, saved / f.name)
    result = logs.compact(url)
    assert result.written and result.deleted == 6
    for f in saved.iterdir():  # as if the compaction had died right after writing its part
        shutil.copy(f, folder / f.name)
    assert logs.read_log(url, logs.PREDICTIONS, "m").num_rows == 60  # each row once
    assert logs.count_rows(url, logs.PREDICTIONS, "m") == 60
    logs.compact(url)  # deletes the parts the compacted one holds
    assert [f.name for f in folder.iterdir()] == result.written


def test_a_window_read_opens_only_the_parts_that_overlap_it(tmp_path: Path) -> None:
    url = str(tmp_path / "logs")
    _write(url, 5)
    oldest = sorted(next(Path(url).rglob("date=*")).glob("part-*.parquet"))[0]
    oldest.write_bytes(b"not parquet at all")  # a read that opened it would fail
    window = logs.read_log(url, logs.PREDICTIONS, "m", since=T0 + 100, until=T0 + 400)
    assert window.num_rows == 30
    assert logs.count_rows(url, logs.PREDICTIONS, "m", since=T0 + 100, until=T0 + 400) == 30


def test_the_newest_labelled_rows_are_found_reading_back_from_the_newest_parts(tmp_path: Path) -> None:
    url = str(tmp_path / "logs")
    _write(url, 30)
    _label_all(url, 30, at=T0 + 3000.0)
    newest = logs.labelled(url, "m", at=T0 + 3600, newest=25, versions=(1,))
    assert newest.num_rows == 25
    assert newest["request_id"].to_pylist()[-1] == "r29-9"
    assert logs.labelled(url, "m", at=T0 + 3600, newest=25, versions=(2,)).num_rows == 0


def test_the_newest_labelled_rows_are_read_from_the_parts_that_hold_them_and_no_older_one(
    tmp_path: Path,
) -> None:
    """The part names say how many rows each holds: the first look back reaches the newest parts
    that hold the rows wanted, however long ago they were logged, and opens nothing older."""
    url = str(tmp_path / "logs")
    _write(url, 30)  # a part a minute, the newest logged half an hour before the read
    _label_all(url, 30, at=T0 + 1800.0)
    parts = sorted(next(Path(url, "predictions").rglob("date=*")).glob("part-*.parquet"))
    parts[-4].write_bytes(b"not parquet at all")  # older than the 3 newest parts: a read that opened it fails
    newest = logs.labelled(url, "m", at=T0 + 3600, newest=25, versions=(1,))
    assert newest.num_rows == 25
    assert newest["request_id"].to_pylist() == [f"r{p}-{i}" for p in (27, 28, 29) for i in range(10)][5:]
    with pytest.raises(ValueError, match="Could not open Parquet"):  # 40 rows need the older parts
        logs.labelled(url, "m", at=T0 + 3600, newest=40, versions=(1,))


def test_the_project_file_is_stored_when_it_changes_and_comes_back_whole(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'e.db'}", str(tmp_path / "a")).open()
    spec = parse_spec(SPEC)
    digest, new = store.specs.save("m", canonical_json(spec))
    assert new and store.specs.save("m", canonical_json(spec)) == (digest, False)
    changed = parse_spec(SPEC.replace("compact_every: 2", "compact_every: 3"))
    digest2, new2 = store.specs.save("m", canonical_json(changed))
    assert new2 and digest2 != digest
    current = store.specs.current()
    assert current is not None and current.sha256 == digest2
    assert spec_from_json(current.data) == changed
    assert [n for n, _, _ in store.specs.history("m")] == [1, 2]
    store.close()


def test_a_storage_failure_in_a_step_is_a_failed_step_and_the_loop_goes_on(tmp_path: Path) -> None:
    (tmp_path / "evertrain.yaml").write_text(SPEC)
    spec = parse_spec(SPEC)
    clock = ManualClock(time.time())
    store = Store(
        f"sqlite:///{tmp_path / 'e.db'}", str(tmp_path / "a"), logs_url=str(tmp_path / "l"), clock=clock.now
    )
    store.open()

    def unreachable(ctx: CycleContext) -> dict[str, object]:
        # what a storage client raises when its server is gone (not an evertrain error)
        raise ConnectionRefusedError(111, "Connection refused")

    steps = {name: (lambda ctx: {}) for name in STEPS}
    steps["monitor"] = unreachable
    controller = Controller(store, spec, tmp_path, clock=clock, steps=steps)  # type: ignore[arg-type]
    first = controller.cycle()
    second = controller.cycle()
    assert "Connection refused" in first["monitor"]["error"] and second["cycle"] == 2
    failed = [r for r in store.runs.list(model="m", kind="step") if r.status == "failed"]
    assert len(failed) == 2 and "storage failed" in (failed[0].error or "")
    assert "compaction" in second  # every compact_every (2) cycles
    assert store.specs.current("m") is not None  # saved for replicas
    store.close()


def test_logs_compact_command(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "evertrain.yaml").write_text(SPEC)
    _write(str(project / "shared" / "logs"), 4)
    done = subprocess.run(
        [sys.executable, "-m", "evertrain.faces", "logs", "compact", "--project", str(project), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["parts_before"] == 4 and out["parts_after"] == 1 and out["rows"] == 40
    part = next((project / "shared" / "logs").rglob("compact-*.parquet"))
    assert pq.read_metadata(part).num_rows == 40


@pytest.mark.parametrize("value", ['{"s3": 3}', "[1]"])
def test_bad_storage_options_are_refused_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evertrain.exceptions import UsageError
    from evertrain.store import storage

    monkeypatch.setenv("EVERTRAIN_STORAGE_OPTIONS", value)
    with pytest.raises(UsageError, match="EVERTRAIN_STORAGE_OPTIONS"):
        storage.options_for("s3")
