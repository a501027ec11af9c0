"""Reading the logs: one reader, built on ``pyarrow.dataset``, for every part that reads them.

:func:`read_log_parts` reads one log of one model, pushing the time bounds and the
columns down into the scan, one table per part with that part's own column types (two
versions of a model may log a column with different types). :func:`read_log` joins the
parts into one table ordered by time, and :func:`labelled` joins predictions with the
labels that had arrived by a given time. Only the partition days asked for are listed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from evertrain.data.logs.layout import (
    FEEDBACK,
    KINDS,
    PREDICTIONS,
    REPLACES_KEY,
    PartName,
    model_folder,
    parse_part_name,
    partition_date,
)
from evertrain.store.names import CHAMPION
from evertrain.store.storage import fresh_ls, open_fs, storage_errors

Inclusive = Literal["right", "left"]
"""Which end of the time bounds a read includes: ``right`` reads ``since < ts <= until`` (what
arrived after the last look, up to now), ``left`` reads ``since <= ts < until`` (a window)."""

T = TypeVar("T")
#: Tries of a read whose parts were compacted away between the listing and the read.
_READ_TRIES = 3
#: Parts of one log read at once (each waits on its own round trips to the storage).
READ_THREADS = 16
#: How much earlier than its prediction a label may be stamped (clocks of two machines differ).
LABEL_SKEW_SECONDS = 300.0
#: The first look back of a read of the newest labelled rows where the parts' names do not say
#: how far back enough rows lie; each further look is four times longer.
FIRST_LOOK_SECONDS = 60.0
#: The shortest first look back (a busy log's newest part may span a moment).
MIN_LOOK_SECONDS = 1.0


@dataclass(frozen=True)
class Part:
    path: str
    day: str
    info: PartName


def _replaced(fs: fsspec.AbstractFileSystem, part: Part) -> list[str]:
    """The names of the parts a compacted part holds the rows of (from its Parquet metadata)."""
    try:
        meta = pq.read_schema(part.path, filesystem=fs).metadata or {}
    except FileNotFoundError:
        return []
    raw = meta.get(REPLACES_KEY)
    return list(json.loads(raw)) if raw else []


def list_parts(
    fs: fsspec.AbstractFileSystem,
    root: str,
    kind: str,
    model: str,
    *,
    first_date: str | None = None,
    last_date: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[Part]:
    """The finished parts of one log of one model that may hold rows within the bounds, in path order.

    Listed fresh (no listing cache): only the day folders within ``first_date`` ..
    ``last_date`` are listed, and a part whose name puts all its rows outside ``since`` ..
    ``until`` is left out unopened. A part whose rows a compacted part also holds (a
    compaction that has not deleted it yet) is left out too, so no row is read twice.
    """
    base = model_folder(root, kind, model)
    parts: list[Part] = []
    for folder in fresh_ls(fs, base):
        name = folder.rsplit("/", 1)[-1]
        if not name.startswith("date="):
            continue
        day = name[len("date=") :]
        if (first_date is not None and day < first_date) or (last_date is not None and day > last_date):
            continue
        for path in fresh_ls(fs, folder):
            info = parse_part_name(path.rsplit("/", 1)[-1])
            if info is not None and info.overlaps(since, until):
                parts.append(Part(path, day, info))
    compacted = [p for p in parts if p.info.compacted]
    if compacted:
        held: set[tuple[str, str]] = set()
        # newest compaction first: a part it holds is skipped even if it is itself a compacted part
        for part in sorted(compacted, key=lambda p: p.path, reverse=True):
            if (part.day, part.info.name) in held:
                continue
            held.update((part.day, name) for name in _replaced(fs, part))
        parts = [p for p in parts if (p.day, p.info.name) not in held]
    return sorted(parts, key=lambda p: p.path)


def _retrying(read: Callable[[], T]) -> T:
    """``read()``, listed and read again when a part vanished in between (compacted away)."""
    for attempt in range(_READ_TRIES):
        try:
            return read()
        except FileNotFoundError:
            if attempt == _READ_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _time_filter(since: float | None, until: float | None, inclusive: Inclusive) -> ds.Expression | None:
    ts = ds.field("ts")
    bounds = []
    if since is not None:
        bounds.append(ts > since if inclusive == "right" else ts >= since)
    if until is not None:
        bounds.append(ts <= until if inclusive == "right" else ts < until)
    if not bounds:
        return None
    return bounds[0] if len(bounds) == 1 else bounds[0] & bounds[1]


def read_log_parts(
    logs_url: str,
    kind: str,
    model: str,
    *,
    since: float | None = None,
    until: float | None = None,
    inclusive: Inclusive = "right",
    columns: list[str] | None = None,
    first_date: str | None = None,
    last_date: str | None = None,
) -> list[pa.Table]:
    """The rows of one log of one model within the time bounds, one table per part, in path order.

    Each table keeps its part's own column types and holds those of ``columns`` (all when
    None) that the part has. ``first_date`` and ``last_date`` (``YYYY-MM-DD``, inclusive)
    skip whole day partitions without opening them.
    """
    if kind not in KINDS:
        raise ValueError(f"log kind must be one of {KINDS}, got {kind!r}")
    if since is not None and first_date is None:
        first_date = partition_date(since)
    if until is not None and last_date is None:
        last_date = partition_date(until)
    fs, root = open_fs(logs_url)
    condition = _time_filter(since, until, inclusive)

    def read() -> list[pa.Table]:
        parts = list_parts(
            fs, root, kind, model, first_date=first_date, last_date=last_date, since=since, until=until
        )
        if not parts:
            return []
        dataset = ds.dataset([p.path for p in parts], filesystem=fs, format="parquet", partitioning=None)

        def one(fragment: ds.Fragment) -> pa.Table:
            schema = fragment.physical_schema
            wanted = schema.names if columns is None else [c for c in columns if c in schema.names]
            return fragment.to_table(schema=schema, columns=wanted, filter=condition)

        fragments = list(dataset.get_fragments())
        if len(fragments) == 1:
            return [one(fragments[0])]
        # Each part costs its own round trips (the footer, then the columns): on object storage
        # a read waits on them, not on the CPU, so the parts are read side by side, in order.
        with ThreadPoolExecutor(min(READ_THREADS, len(fragments))) as pool:
            return list(pool.map(one, fragments))

    with storage_errors(logs_url, f"read the {kind} log of model {model!r}"):
        return _retrying(read)


def count_rows(
    logs_url: str, kind: str, model: str, *, since: float | None = None, until: float | None = None
) -> int:
    """How many rows of one log have ``since < ts <= until``: from the part names where a part lies
    wholly inside the bounds, by reading only ``ts`` where it straddles one."""
    if kind not in KINDS:
        raise ValueError(f"log kind must be one of {KINDS}, got {kind!r}")
    fs, root = open_fs(logs_url)
    first = None if since is None else partition_date(since)
    last = None if until is None else partition_date(until)

    def count() -> int:
        parts = list_parts(fs, root, kind, model, first_date=first, last_date=last, since=since, until=until)
        total = 0
        straddling = []
        for part in parts:
            if part.info.rows is not None and part.info.within(since, until):
                total += part.info.rows
            else:
                straddling.append(part.path)
        if straddling:
            dataset = ds.dataset(straddling, filesystem=fs, format="parquet", partitioning=None)
            condition = _time_filter(since, until, "right")
            total += dataset.count_rows(filter=condition) if condition is not None else dataset.count_rows()
        return total

    with storage_errors(logs_url, f"count the {kind} log of model {model!r}"):
        return _retrying(count)


def _unify(tables: list[pa.Table]) -> pa.Table:
    """One table from parts whose columns may differ: a column missing from a part is null there, and
    a column two parts type differently is kept as text in all (as the writer does within a part)."""
    types: dict[str, list[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            types.setdefault(field.name, []).append(field.type)
    fields = []
    for name, seen in types.items():
        first = seen[0]
        if all(t.equals(first) for t in seen):
            fields.append(pa.field(name, first))
        elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in seen):
            fields.append(pa.field(name, pa.float64()))
        else:
            fields.append(pa.field(name, pa.string()))
    schema = pa.schema(fields)
    aligned = []
    for table in tables:
        arrays = [
            table.column(f.name).cast(f.type)
            if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type)
            for f in schema
        ]
        aligned.append(pa.Table.from_arrays(arrays, schema=schema))
    return pa.concat_tables(aligned)


def read_log(
    logs_url: str,
    kind: str,
    model: str,
    *,
    since: float | None = None,
    until: float | None = None,
    inclusive: Inclusive = "right",
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows of one log with ``since < ts <= until`` (either bound optional; see :data:`Inclusive`),
    oldest first, as one table (an empty one with a ``ts`` column when the log has no parts)."""
    parts = read_log_parts(
        logs_url, kind, model, since=since, until=until, inclusive=inclusive, columns=columns
    )
    if not parts:
        return pa.table({"ts": pa.array([], pa.float64())})
    table = _unify(parts)
    if table.num_rows and "ts" in table.column_names:
        table = table.take(pc.sort_indices(table, [("ts", "ascending")]))
    return table


def labelled(
    logs_url: str,
    model: str,
    *,
    at: float,
    since: float | None = None,
    arms: tuple[str, ...] = (CHAMPION,),
    versions: tuple[int, ...] | None = None,
    newest: int | None = None,
) -> pa.Table:
    """Predictions of ``arms`` (and ``versions``, when given) with ``since < ts <= at``, joined with
    the labels that had arrived by ``at``, oldest first.

    ``newest``: only the newest that many labelled rows are wanted, so the newest parts
    are read first and older ones only while too few rows are found: a monitoring cycle
    reads the few parts its window needs, not the whole history of the log. The first look
    goes back as far as the newest parts' names say that many predictions were logged
    (:func:`_first_look`), each further look four times further, until enough rows are found.
    """
    if newest is None:
        return _labelled(logs_url, model, at=at, since=since, arms=arms, versions=versions)
    fs, root = open_fs(logs_url)
    with storage_errors(logs_url, f"read the {PREDICTIONS} log of model {model!r}"):
        days = [
            f.rsplit("/", 1)[-1][len("date=") :]
            for f in fresh_ls(fs, model_folder(root, PREDICTIONS, model))
            if f.rsplit("/", 1)[-1].startswith("date=")
        ]
    if not days:
        return pa.table({})
    # the start of the oldest day partition: no row is older, so looking further back finds nothing
    oldest = dt.datetime.strptime(min(days), "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
    with storage_errors(logs_url, f"list the {PREDICTIONS} log of model {model!r}"):
        span = _first_look(fs, root, model, sorted(days, reverse=True), at, since, newest)
    while True:
        look = at - span
        if since is not None:
            look = max(look, since)
        table = _labelled(logs_url, model, at=at, since=look, arms=arms, versions=versions)
        if table.num_rows >= newest or look <= oldest or look == since:
            return table.slice(max(0, table.num_rows - newest))
        span *= 4


def _first_look(
    fs: fsspec.AbstractFileSystem,
    root: str,
    model: str,
    days: list[str],
    at: float,
    since: float | None,
    newest: int,
) -> float:
    """How far back from ``at`` the newest prediction parts hold ``newest`` rows, by their names
    (day partitions listed newest first, only as many as that takes; all of the log when it
    holds fewer); at least :data:`MIN_LOOK_SECONDS`, and :data:`FIRST_LOOK_SECONDS` where
    names do not tell.

    Their rows include other arms' and rows not labelled yet, so the look may be too short
    (the caller then looks further back), but it reaches no further than the newest parts
    that hold that many rows: at a few hundred requests a second, a minute of parts is many
    times the rows a window needs, and on object storage each part costs its own round trips.
    """
    last_day = partition_date(at)
    first_day = None if since is None else partition_date(since)
    found, first = 0, at
    for day in days:
        if day > last_day:
            continue
        if first_day is not None and day < first_day:
            break
        parts = list_parts(fs, root, PREDICTIONS, model, first_date=day, last_date=day, since=since, until=at)
        for part in sorted(parts, key=lambda p: p.info.last or 0.0, reverse=True):
            if part.info.rows is None or part.info.first is None:
                return FIRST_LOOK_SECONDS
            found += part.info.rows
            first = min(first, part.info.first)
            if found >= newest:
                return max(at - part.info.first, MIN_LOOK_SECONDS)
    # fewer rows in the whole log than wanted: all of it
    return max(at - first, MIN_LOOK_SECONDS) if found else FIRST_LOOK_SECONDS


def _labelled(
    logs_url: str,
    model: str,
    *,
    at: float,
    since: float | None,
    arms: tuple[str, ...],
    versions: tuple[int, ...] | None,
) -> pa.Table:
    preds = read_log(logs_url, PREDICTIONS, model, since=since, until=at)
    if preds.num_rows == 0 or "arm" not in preds.column_names:
        return pa.table({})
    mask = pc.is_in(preds["arm"], value_set=pa.array(list(arms)))
    preds = preds.filter(mask)
    if versions is not None and "model_version" in preds.column_names:
        wanted = pa.array(list(versions), pa.int64()).cast(preds["model_version"].type)
        preds = preds.filter(pc.is_in(preds["model_version"], value_set=wanted))
    if preds.num_rows == 0:
        return pa.table({})
    # Labels come after their predictions: those stamped well before the oldest one are not theirs.
    label_since = None if since is None else since - LABEL_SKEW_SECONDS
    labels = read_log(
        logs_url, FEEDBACK, model, since=label_since, until=at, columns=["request_id", "label", "ts"]
    )
    if labels.num_rows == 0:
        return pa.table({})
    labels = labels.rename_columns(["request_id", "label", "label_ts"])
    # a label sent twice counts once: the newest one wins
    frame = labels.to_pandas().drop_duplicates("request_id", keep="last")
    newest = pa.Table.from_pandas(frame, preserve_index=False)
    newest = newest.set_column(0, "request_id", pc.cast(newest["request_id"], pa.string()))
    preds = preds.set_column(
        preds.schema.get_field_index("request_id"), "request_id", pc.cast(preds["request_id"], pa.string())
    )
    joined = preds.join(newest, keys="request_id", join_type="inner")
    return joined.take(pc.sort_indices(joined, [("ts", "ascending")]))
