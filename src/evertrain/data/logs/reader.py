"""Reading the logs: one reader, built on ``pyarrow.dataset``, for every part that reads them.

:func:`read_log_parts` reads one log of one model, pushing the time bounds and the
columns down into the scan, one table per part with that part's own column types (two
versions of a model may log a column with different types). :func:`read_log` joins the
parts into one table ordered by time, and :func:`labelled` joins predictions with the
labels that had arrived by a given time. Only the partition days asked for are listed.
"""

from __future__ import annotations

from typing import Literal

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from evertrain.data.logs.layout import FEEDBACK, KINDS, PREDICTIONS, model_folder
from evertrain.store.names import CHAMPION

Inclusive = Literal["right", "left"]
"""Which end of the time bounds a read includes: ``right`` reads ``since < ts <= until`` (what
arrived after the last look, up to now), ``left`` reads ``since <= ts < until`` (a window)."""


def _part_files(
    fs: fsspec.AbstractFileSystem,
    root: str,
    kind: str,
    model: str,
    first_date: str | None,
    last_date: str | None,
) -> list[str]:
    """Every finished part of one log of one model, in path order, within the partition days given."""
    base = model_folder(root, kind, model)
    if not fs.exists(base):
        return []
    out = []
    for path in sorted(fs.find(base)):
        folder, name = path.rsplit("/", 2)[-2:]
        if not name.endswith(".parquet") or name.startswith((".", "_")) or not folder.startswith("date="):
            continue  # a writer's hidden temporary file, or not a part of this layout
        day = folder[len("date=") :]
        if (first_date is not None and day < first_date) or (last_date is not None and day > last_date):
            continue
        out.append(path)
    return out


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
    fs, root = fsspec.core.url_to_fs(logs_url)
    files = _part_files(fs, root, kind, model, first_date, last_date)
    if not files:
        return []
    dataset = ds.dataset(files, filesystem=fs, format="parquet", partitioning=None)
    condition = _time_filter(since, until, inclusive)
    tables = []
    for fragment in dataset.get_fragments():
        schema = fragment.physical_schema
        wanted = schema.names if columns is None else [c for c in columns if c in schema.names]
        tables.append(fragment.to_table(schema=schema, columns=wanted, filter=condition))
    return tables


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
    logs_url: str, model: str, *, at: float, since: float | None = None, arms: tuple[str, ...] = (CHAMPION,)
) -> pa.Table:
    """Predictions of ``arms`` joined with the labels that had arrived by ``at``."""
    preds = read_log(logs_url, PREDICTIONS, model, since=since, until=at)
    if preds.num_rows == 0 or "arm" not in preds.column_names:
        return pa.table({})
    mask = pc.is_in(preds["arm"], value_set=pa.array(list(arms)))
    preds = preds.filter(mask)
    labels = read_log(logs_url, FEEDBACK, model, until=at, columns=["request_id", "label", "ts"])
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
