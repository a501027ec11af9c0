"""Writing the logs: a bounded queue, a background Parquet writer, and a local spool.

Requests hand their rows to :meth:`LogWriter.offer`, which never waits on the log store:
when the queue already holds ``queue_max`` rows the new ones are refused and counted as
dropped (in serving's ``/metrics``), so a slow disk or object store cannot slow serving
down. A writer thread takes everything queued every ``flush_seconds`` (or as soon as
``batch_rows`` are waiting) and writes one Parquet part per log, model and day, in the
layout of :mod:`evertrain.data.logs.layout`.

No row is lost to an outage of the log store:

- every write is retried with backoff on every transport error of any storage client
  (:class:`~evertrain.store.retry.Retry` with
  :func:`~evertrain.store.storage.is_transport_error`: botocore's connection errors are
  not ``OSError`` s);
- rows that still cannot be written go to a **spool**, a local folder
  (``EVERTRAIN_SPOOL_DIR``, default ``.evertrain/spool``), and are written to the store
  when it answers again (*drained*). While the store is down the writer spools at once
  and tries it again with growing pauses, so serving never waits on it;
- **labels are spooled before they are accepted**: ``offer`` of feedback rows writes them
  to the spool on local disk before it returns, so a ``200`` for feedback means the label
  is on disk here even if the process dies the next moment;
- a row that cannot be written at all (a string that is not valid Unicode, say) is **set
  aside** with its reason in ``<spool>/set-aside/`` and counted, and the rest of its
  batch is written.

A spooled batch is uploaded under a name fixed when it was spooled, so uploading it twice
(a crash between the upload and the clean-up, or two replicas sharing a spool) writes the
same part again rather than a second copy. Local files are written under a hidden
temporary name and renamed into place, and a failed write removes its temporary file;
an object store's put is atomic already. :meth:`LogWriter.close` stops taking rows,
writes every queued row (or spools it) and returns, which is what a SIGTERM leads to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from evertrain import settings
from evertrain.data.logs.layout import (
    ERROR_COLUMNS,
    ERRORS,
    FEEDBACK,
    FEEDBACK_COLUMNS,
    KINDS,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    part_name,
    partition_date,
    partition_folder,
)
from evertrain.store.retry import Retry
from evertrain.store.storage import describe, is_transport_error, open_fs

log = logging.getLogger("evertrain.data.logs")

_ARROW_TYPES = {
    "string": pa.string(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_DAY = 86400.0
#: How a part is written: four tries, 0.1 s then doubling (with jitter), on any transport error.
WRITE_RETRY = Retry(attempts=4, base_delay=0.1, max_delay=2.0, retry_on=is_transport_error)
#: After a write failed for good, the writer spools without trying the store for this long,
#: doubling up to ``_MAX_PAUSE`` while the store stays down; one upload that works ends the pause.
_FIRST_PAUSE = 0.5
_MAX_PAUSE = 5.0
SET_ASIDE = "set-aside"
_INCOMING = "incoming"
_BATCH = "batch-"
_SPOOLED = ".spooled"  # in a batch folder: its rows waited for the store (counted as spooled)


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
    @property
    def log_spooled_rows(self) -> _CounterFamily: ...
    @property
    def log_drained_rows(self) -> _CounterFamily: ...
    @property
    def log_set_aside_rows(self) -> _CounterFamily: ...


@dataclass
class _Batch:
    kind: str
    model: str
    columns: Mapping[str, list[Any]]
    types: Mapping[str, str]
    n: int


class _RowError(ValueError):
    """Some rows of a batch cannot be stored; ``good`` is the table of the others."""

    def __init__(self, good: pa.Table | None, bad: list[tuple[dict[str, Any], str]]) -> None:
        super().__init__(f"{len(bad)} row(s) cannot be stored")
        self.good = good
        self.bad = bad


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


def _column_types(kind: str, group: list[_Batch]) -> dict[str, str]:
    """The columns of one part and their log types: the log's own columns first, features after;
    a column two batches type differently is kept as text."""
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
    return order


def _values(group: list[_Batch], name: str) -> list[Any]:
    values: list[Any] = []
    for b in group:
        col = b.columns.get(name)
        values.extend(col if col is not None else [None] * b.n)
    return values


def build_table(kind: str, group: list[_Batch]) -> pa.Table:
    """One table of the rows of ``group``; :class:`_RowError` names the rows that cannot be stored
    (with the table of the others), so that one bad row never costs its batch."""
    order = _column_types(kind, group)
    columns = {name: _values(group, name) for name in order}
    try:
        return pa.Table.from_arrays([_arrow(columns[n], k) for n, k in order.items()], names=list(order))
    except (pa.ArrowException, ValueError, TypeError, UnicodeError, OverflowError):
        pass
    n = sum(b.n for b in group)
    keep: list[int] = []
    bad: list[tuple[dict[str, Any], str]] = []
    for i in range(n):
        row = {name: columns[name][i] for name in order}
        try:
            for name, k in order.items():
                _arrow([row[name]], k)
            keep.append(i)
        except (pa.ArrowException, ValueError, TypeError, UnicodeError, OverflowError) as exc:
            bad.append((row, describe(exc)))
    good = None
    if keep:
        good = pa.Table.from_arrays(
            [_arrow([columns[n][i] for i in keep], k) for n, k in order.items()], names=list(order)
        )
    raise _RowError(good, bad)


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


def _name_of(table: pa.Table, token: str) -> str:
    """The part name of ``table``: its time range and rows when ``ts`` allows, else the plain one."""
    ts = table.column("ts")
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    if lo is None or hi is None or lo < 0:
        return f"part-{token}.parquet"
    return part_name(float(lo), float(hi), table.num_rows, token)


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _write_local(path: Path, data: bytes) -> None:
    """``data`` at ``path`` all at once: a hidden temporary file renamed into place, removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def put_bytes(fs: Any, path: str, data: bytes) -> None:
    """``data`` as the file ``path`` of ``fs``, seen whole or not at all by readers."""
    if isinstance(fs, LocalFileSystem):
        _write_local(Path(path), data)
    else:
        fs.pipe_file(path, data)


class LogWriter:
    """Bounded, non-blocking queue of log rows with one background writer thread and a local spool."""

    def __init__(
        self,
        url: str,
        *,
        batch_rows: int = 1000,
        flush_seconds: float = 1.0,
        queue_max: int = 100_000,
        metrics: LogMetrics | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        retry: Retry = WRITE_RETRY,
    ) -> None:
        self.url = url
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.queue_max = queue_max
        self.metrics = metrics
        self.retry = retry
        if spool_dir is None:
            # one spool per logs location: a replica restarted with another store drains nothing wrong
            spool_dir = settings.spool_dir() / hashlib.sha256(url.encode()).hexdigest()[:12]
        self.spool = Path(spool_dir)
        self._fs: Any = None
        self._root = ""
        self._cond = threading.Condition()
        self._pending: list[_Batch] = []
        self._pending_rows = 0
        self._inflight_rows = 0
        self._incoming_rows = 0  # labels on local disk not yet tried on the store
        self._accepted = 0
        self._done = 0
        self._flush_asked = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._io = threading.Lock()  # one drain of the spool at a time
        self._paused_until = 0.0
        self._pause = _FIRST_PAUSE
        self.written_rows = {k: 0 for k in KINDS}
        self.dropped_rows = {k: 0 for k in KINDS}
        self.spooled_rows = {k: 0 for k in KINDS}
        self.drained_rows = {k: 0 for k in KINDS}
        self.set_aside_rows = {k: 0 for k in KINDS}

    @property
    def fs(self) -> Any:
        if self._fs is None:
            fs, root = open_fs(self.url)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs

    @property
    def root(self) -> str:
        _ = self.fs
        return self._root

    # -- the request side ---------------------------------------------------------------

    def offer(
        self, kind: str, model: str, columns: Mapping[str, list[Any]], types: Mapping[str, str], n: int
    ) -> bool:
        """Queue ``n`` rows without waiting on the store; ``False`` (and counted as dropped) when the
        queue is full. Feedback rows are on local disk when this returns ``True``."""
        with self._cond:
            queued = self._pending_rows + self._inflight_rows + self._incoming_rows
            if self._closing or queued + n > self.queue_max:
                self._count_dropped(kind, n)
                return False
            if kind != FEEDBACK:
                self._pending.append(_Batch(kind, model, columns, types, n))
                self._pending_rows += n
                self._accepted += n
                if self._pending_rows >= self.batch_rows:
                    self._cond.notify_all()
                return True
        try:
            stored = self._spool_incoming(_Batch(kind, model, columns, types, n))
        except OSError as exc:
            log.error("cannot spool %d %s rows of model %s: %s", n, kind, model, exc)
            self._count_dropped(kind, n)
            return False
        with self._cond:
            self._incoming_rows += stored
            self._accepted += n
        return True

    @property
    def queued_rows(self) -> int:
        return self._pending_rows + self._inflight_rows + self._incoming_rows

    def spooled(self) -> int:
        """Rows in the spool now, waiting for the store (labels not yet tried included)."""
        total = 0
        for path in self._spooled_files():
            with contextlib.suppress(OSError, pa.ArrowException):
                total += pq.read_metadata(path).num_rows
        return total

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="evertrain-log-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write every row queued so far; ``True`` once each is on the store or in the spool."""
        with self._cond:
            target = self._accepted
            if self._thread is None and self._done >= target:
                return True
        if self._thread is None:
            self._pass()
            return True
        with self._cond:
            self._flush_asked = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new rows, write (or spool) all queued ones, stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:  # never started: write what was queued, here
            self._pass()

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
            try:
                self._pass()
            except Exception:  # the writer must outlive any surprise; its rows are spooled or counted
                log.exception("the log writer's pass failed")
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _pass(self) -> None:
        """Write what is queued (spooling what the store refuses), then drain the spool."""
        with self._cond:
            target = self._accepted
            batches, rows = self._pending, self._pending_rows
            self._pending, self._pending_rows = [], 0
            self._inflight_rows = rows
            self._flush_asked = False
        if self.metrics is not None:
            self.metrics.log_queue_rows.set(rows)
        try:
            if batches:
                self._write(batches)
            self._drain()
        finally:
            with self._cond:
                self._inflight_rows = 0
                self._done = max(self._done, target)
                self._cond.notify_all()
            if self.metrics is not None:
                self.metrics.log_queue_rows.set(self._pending_rows)

    def _write(self, batches: list[_Batch]) -> None:
        groups: dict[tuple[str, str], list[_Batch]] = {}
        for b in batches:
            groups.setdefault((b.kind, b.model), []).append(b)
        for (kind, model), group in groups.items():
            table = self._checked_table(kind, model, group)
            if table is None:
                continue
            for date, part in _by_day(table):
                token = uuid.uuid4().hex
                name = _name_of(part, token)
                if self._store_paused() or not self._put(kind, model, date, name, _parquet(part)):
                    self._spool_batch(kind, model, date, token, part)
                    continue
                self._count(self.written_rows, kind, part.num_rows, "logged_rows")

    def _checked_table(self, kind: str, model: str, group: list[_Batch]) -> pa.Table | None:
        """The table of ``group``, its unstorable rows set aside (None when none is left)."""
        try:
            return build_table(kind, group)
        except _RowError as exc:
            self._set_aside(kind, model, exc.bad)
            return exc.good

    # -- the store ---------------------------------------------------------------------------

    def _store_paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def _store_failed(self) -> None:
        self._paused_until = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, _MAX_PAUSE)

    def _store_answered(self) -> None:
        self._paused_until = 0.0
        self._pause = _FIRST_PAUSE

    def _put(self, kind: str, model: str, date: str, name: str, data: bytes, *, retry: bool = True) -> bool:
        """Write one part to the store; ``False`` when the store would not take it (it is spooled then)."""
        folder = partition_folder(self.root, kind, model, date)

        def attempt() -> None:
            try:
                put_bytes(self.fs, f"{folder}/{name}", data)
            except BaseException as exc:
                if self.metrics is not None and is_transport_error(exc):
                    self.metrics.log_write_errors.inc()
                raise

        try:
            if retry:
                self.retry.call(attempt)
            else:
                attempt()
        except Exception as exc:
            log.warning("cannot write %s/%s (%s); its rows wait in the spool", folder, name, describe(exc))
            self._store_failed()
            return False
        self._store_answered()
        return True

    # -- the spool ---------------------------------------------------------------------------

    def _day_folder(self, kind: str, model: str, date: str) -> Path:
        return self.spool / kind / f"model={model}" / f"date={date}"

    def _spool_incoming(self, batch: _Batch) -> int:
        """Put labels on local disk before they are accepted; returns the rows stored."""
        table = self._checked_table(batch.kind, batch.model, [batch])
        if table is None:
            return 0
        for date, part in _by_day(table):
            folder = self._day_folder(batch.kind, batch.model, date) / _INCOMING
            name = f"{time.time_ns()}-{part.num_rows}-{uuid.uuid4().hex[:12]}.parquet"
            _write_local(folder / name, _parquet(part))
        return table.num_rows

    def _spool_batch(self, kind: str, model: str, date: str, token: str, table: pa.Table) -> None:
        """Keep rows the store would not take, as a batch uploaded later under a name fixed now."""
        batch = self._day_folder(kind, model, date) / f"{_BATCH}{token}"
        try:
            _write_local(batch / "0.parquet", _parquet(table))
            (batch / _SPOOLED).touch()
        except OSError as exc:
            log.error("cannot spool %d %s rows of model %s: %s", table.num_rows, kind, model, exc)
            self._count_dropped(kind, table.num_rows)
            return
        self._count(self.spooled_rows, kind, table.num_rows, "log_spooled_rows")

    def _spooled_files(self) -> list[Path]:
        if not self.spool.is_dir():
            return []
        return sorted(
            p for p in self.spool.glob("*/model=*/date=*/*/*.parquet") if not p.name.startswith(".")
        )

    def _seal_incoming(self, day: Path) -> None:
        """Move the labels waiting in ``day/incoming`` into a new batch, whose set is then fixed."""
        incoming = day / _INCOMING
        files = sorted(incoming.glob("*.parquet")) if incoming.is_dir() else []
        if not files:
            return
        token = uuid.uuid4().hex
        building = day / f".{_BATCH}{token}"
        building.mkdir(parents=True, exist_ok=True)
        rows = 0
        for f in files:
            try:
                os.replace(f, building / f.name)
            except FileNotFoundError:  # another writer on this spool took it
                continue
            rows += int(f.name.split("-")[1])
        os.replace(building, day / f"{_BATCH}{token}")
        with self._cond:
            self._incoming_rows = max(0, self._incoming_rows - rows)

    def _batches(self) -> list[tuple[str, str, str, Path]]:
        """Every sealed batch in the spool: (log, model, date, folder), labels sealed first."""
        out: list[tuple[str, str, str, Path]] = []
        for kind_dir in sorted(p for p in self.spool.iterdir() if p.name in KINDS):
            for day in sorted(kind_dir.glob("model=*/date=*")):
                if kind_dir.name == FEEDBACK:
                    with contextlib.suppress(OSError):
                        self._seal_incoming(day)
                model = day.parent.name[len("model=") :]
                date = day.name[len("date=") :]
                out.extend((kind_dir.name, model, date, b) for b in sorted(day.glob(f"{_BATCH}*")))
        return out

    def _drain(self) -> None:
        """Upload every spooled batch the store takes now; a refusal ends the drain for this pass,
        and the batches not yet written count as spooled from then on."""
        if not self.spool.is_dir():
            return
        with self._io:
            batches = self._batches()
            for i, (kind, model, date, batch) in enumerate(batches):
                if self._store_paused() or not self._upload(kind, model, date, batch):
                    for kind_, _, _, rest in batches[i:]:
                        self._mark_spooled(kind_, rest)
                    return

    def _mark_spooled(self, kind: str, batch: Path) -> None:
        marker = batch / _SPOOLED
        if marker.exists() or not batch.is_dir():
            return
        rows = 0
        for f in batch.glob("*.parquet"):
            with contextlib.suppress(OSError, pa.ArrowException):
                rows += pq.read_metadata(f).num_rows
        with contextlib.suppress(OSError):
            marker.touch()
            self._count(self.spooled_rows, kind, rows, "log_spooled_rows")

    def _upload(self, kind: str, model: str, date: str, batch: Path) -> bool:
        """Write one spooled batch as one part; remove it once written. ``False``: the store refused."""
        files = sorted(batch.glob("*.parquet"))
        spooled = (batch / _SPOOLED).exists()
        if not files:
            shutil.rmtree(batch, ignore_errors=True)
            return True
        try:
            tables = [pq.read_table(f) for f in files]
        except FileNotFoundError:
            return True  # another writer on this spool took it
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        token = batch.name[len(_BATCH) :]
        # a batch already known to wait for the store gets one try per pass; fresh labels get the retries
        if not self._put(kind, model, date, _name_of(table, token), _parquet(table), retry=not spooled):
            return False
        shutil.rmtree(batch, ignore_errors=True)
        if spooled:
            self._count(self.drained_rows, kind, table.num_rows, "log_drained_rows")
        self._count(self.written_rows, kind, table.num_rows, "logged_rows")
        return True

    def _set_aside(self, kind: str, model: str, bad: list[tuple[dict[str, Any], str]]) -> None:
        """Keep rows that cannot be stored, each with its reason, as JSON lines; count them."""
        if not bad:
            return
        lines = []
        for row, reason in bad:
            lines.append(
                json.dumps({"log": kind, "model": model, "reason": reason, "row": row}, default=repr)
            )
        target = self.spool / SET_ASIDE / f"{kind}-{model}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
        log.error(
            "%d %s row(s) of model %s cannot be stored and were set aside in %s: %s",
            len(bad),
            kind,
            model,
            target.parent,
            bad[0][1],
        )
        with contextlib.suppress(OSError):
            _write_local(target, ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))
        self._count(self.set_aside_rows, kind, len(bad), "log_set_aside_rows")

    # -- counting ----------------------------------------------------------------------------

    def _count(self, local: dict[str, int], kind: str, n: int, metric: str) -> None:
        local[kind] += n
        if self.metrics is not None:
            family = getattr(self.metrics, metric, None)
            if family is not None:
                family.labels(kind).inc(n)

    def _count_dropped(self, kind: str, n: int) -> None:
        self._count(self.dropped_rows, kind, n, "dropped_rows")
