"""Writing the logs: a bounded queue and a background Parquet writer.

Requests hand their rows to :meth:`LogWriter.offer`, which never blocks: when the queue
already holds ``queue_max`` rows the new ones are refused and counted as dropped (in
serving's ``/metrics``), so a slow disk or object store cannot slow serving down. A
writer thread takes everything queued every ``flush_seconds`` (or as soon as
``batch_rows`` are waiting) and writes one Parquet part per log, model and day, in the
layout of :mod:`evertrain.data.logs.layout`.

Writes go through fsspec, so the same code writes to S3. A local part is written under
a hidden temporary name and renamed into place, so readers never see half a file; an
object store's put is atomic already. :meth:`LogWriter.close` stops taking rows, writes
every queued row and returns, which is what a SIGTERM leads to.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from evertrain.data.logs.layout import (
    ERROR_COLUMNS,
    ERRORS,
    FEEDBACK,
    FEEDBACK_COLUMNS,
    KINDS,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    partition_date,
    partition_folder,
)

log = logging.getLogger("evertrain.data.logs")

_ARROW_TYPES = {
    "string": pa.string(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_DAY = 86400.0
_WRITE_ATTEMPTS = 4
_RETRY_BASE_SECONDS = 0.1  # doubled after each failed attempt


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _CounterFamily(Protocol):
    def labels(self, *values: str) -> _Counter: ...


class LogMetrics(Protocol):
    """The counters the writer keeps up to date (serving's Prometheus metrics have them)."""

    @property
    def logged_rows(self) -> _CounterFamily: ...
    @property
    def dropped_rows(self) -> _CounterFamily: ...
    @property
    def log_queue_rows(self) -> _Gauge: ...
    @property
    def log_write_errors(self) -> _Counter: ...


@dataclass
class _Batch:
    kind: str
    model: str
    columns: Mapping[str, list[Any]]
    types: Mapping[str, str]
    n: int


def _arrow(values: list[Any], kind: str) -> pa.Array:
    """One column as Arrow, coercing to the log's type (text for anything not a string)."""
    if kind == "string":
        return pa.array([v if v is None or type(v) is str else _text(v) for v in values], pa.string())
    if kind == "timestamp":
        micros = [None if v is None else round(float(v) * 1e6) for v in values]
        return pa.array(micros, pa.int64()).cast(_ARROW_TYPES["timestamp"])
    if kind == "float64":
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(values, _ARROW_TYPES[kind])


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class LogWriter:
    """Bounded, non-blocking queue of log rows with one background writer thread."""

    def __init__(
        self,
        url: str,
        *,
        batch_rows: int = 1000,
        flush_seconds: float = 1.0,
        queue_max: int = 100_000,
        metrics: LogMetrics | None = None,
    ) -> None:
        self.url = url
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.queue_max = queue_max
        self.metrics = metrics
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        self._cond = threading.Condition()
        self._pending: list[_Batch] = []
        self._pending_rows = 0
        self._inflight_rows = 0
        self._accepted = 0
        self._done = 0
        self._flush_asked = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self.written_rows = {k: 0 for k in KINDS}
        self.dropped_rows = {k: 0 for k in KINDS}

    # -- the request side ---------------------------------------------------------------

    def offer(
        self, kind: str, model: str, columns: Mapping[str, list[Any]], types: Mapping[str, str], n: int
    ) -> bool:
        """Queue ``n`` rows without blocking; ``False`` (and counted as dropped) when the queue is full."""
        with self._cond:
            if self._closing or self._pending_rows + self._inflight_rows + n > self.queue_max:
                self.dropped_rows[kind] += n
                if self.metrics is not None:
                    self.metrics.dropped_rows.labels(kind).inc(n)
                return False
            self._pending.append(_Batch(kind, model, columns, types, n))
            self._pending_rows += n
            self._accepted += n
            if self._pending_rows >= self.batch_rows:
                self._cond.notify_all()
        return True

    @property
    def queued_rows(self) -> int:
        return self._pending_rows + self._inflight_rows

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="evertrain-log-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write every row queued so far; ``True`` once they are on storage (or given up on)."""
        with self._cond:
            target = self._accepted
            if self._thread is None:
                return self._done >= target
            self._flush_asked = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new rows, write all queued ones, stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:  # never started: write what was queued, here
            self._drain_once()

    # -- the writer side -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self.flush_seconds
                while not (self._closing or self._flush_asked or self._pending_rows >= self.batch_rows):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                closing = self._closing
            self._drain_once()
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _drain_once(self) -> None:
        with self._cond:
            batches, rows = self._pending, self._pending_rows
            self._pending, self._pending_rows = [], 0
            self._inflight_rows = rows
            self._flush_asked = False
        if self.metrics is not None:
            self.metrics.log_queue_rows.set(rows)
        try:
            if batches:
                self._write(batches)
        finally:
            with self._cond:
                self._inflight_rows = 0
                self._done += rows
                self._cond.notify_all()
            if self.metrics is not None:
                self.metrics.log_queue_rows.set(self._pending_rows)

    def _write(self, batches: list[_Batch]) -> None:
        groups: dict[tuple[str, str], list[_Batch]] = {}
        for b in batches:
            groups.setdefault((b.kind, b.model), []).append(b)
        for (kind, model), group in groups.items():
            n = sum(b.n for b in group)
            try:
                table = self._table(kind, group)
                for date, part in self._by_day(table):
                    self._put(kind, model, date, part)
            except Exception as exc:  # a bad batch or a dead store must not kill the writer
                log.error("could not write %d %s rows of model %s: %s", n, kind, model, exc)
                self.dropped_rows[kind] += n
                if self.metrics is not None:
                    self.metrics.dropped_rows.labels(kind).inc(n)
                continue
            self.written_rows[kind] += n
            if self.metrics is not None:
                self.metrics.logged_rows.labels(kind).inc(n)

    @staticmethod
    def _table(kind: str, group: list[_Batch]) -> pa.Table:
        fixed = {PREDICTIONS: PREDICTION_COLUMNS, FEEDBACK: FEEDBACK_COLUMNS, ERRORS: ERROR_COLUMNS}[kind]
        order: dict[str, str] = {}
        for name in fixed:
            for b in group:
                if name in b.types:
                    order.setdefault(name, b.types[name])
                    if order[name] != b.types[name]:
                        order[name] = "string"  # two versions disagree on the type: keep both as text
        for b in group:
            for name, kind_ in b.types.items():
                if name not in order:
                    order[name] = kind_
                elif order[name] != kind_:
                    order[name] = "string"
        arrays = []
        for name, kind_ in order.items():
            values: list[Any] = []
            for b in group:
                col = b.columns.get(name)
                values.extend(col if col is not None else [None] * b.n)
            arrays.append(_arrow(values, kind_))
        return pa.Table.from_arrays(arrays, names=list(order))

    @staticmethod
    def _by_day(table: pa.Table) -> list[tuple[str, pa.Table]]:
        ts = table.column("ts").to_numpy(zero_copy_only=False)
        days = np.floor(ts / _DAY).astype(np.int64)
        first = days[0]
        if (days == first).all():
            return [(partition_date(float(first) * _DAY), table)]
        out = []
        for day in np.unique(days):
            out.append((partition_date(float(day) * _DAY), table.filter(pa.array(days == day))))
        return out

    def _put(self, kind: str, model: str, date: str, table: pa.Table) -> None:
        folder = partition_folder(self.root, kind, model, date)
        name = f"part-{uuid.uuid4().hex}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        delay = _RETRY_BASE_SECONDS
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                if self._local:
                    os.makedirs(folder, exist_ok=True)
                    tmp = f"{folder}/.{name}.tmp"
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                    os.replace(tmp, f"{folder}/{name}")
                else:
                    self.fs.pipe_file(f"{folder}/{name}", data)
                return
            except OSError as exc:
                if self.metrics is not None:
                    self.metrics.log_write_errors.inc()
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
                log.warning("writing %s/%s failed (%s); retrying in %.1fs", folder, name, exc, delay)
                time.sleep(delay)
                delay *= 2
