"""Dataset snapshots: a frozen, content-hashed Parquet copy of a table.

A snapshot's id is the sha256 of its Parquet bytes, which are also its address in the
artifact store: the same table (same columns, values and order, written by the same
pyarrow) gives the same id, and taking it twice stores and records it once. Each
snapshot is recorded in ``snapshots`` with its row count, time range and schema, and
in ``snapshot_sources`` with where its rows came from, so lineage can answer "which
data was this version trained on" long after the source has changed.

The schema has the shape serving validates requests against::

    {"columns": {name: {"type": "numeric"|"categorical"|"boolean"|"string"|"timestamp",
                        "nullable": bool, "min"?: float, "max"?: float, "categories"?: [...]}}}
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evertrain.data.tables import arrow_table
from evertrain.data.windows import epoch_seconds
from evertrain.store import Store
from evertrain.store.lineage import snapshot_info

#: A text column of a training snapshot with at most this many distinct values is
#: categorical (its values are listed so serving can refuse an unseen one); above it,
#: it is free text. Lower than :data:`evertrain.data.schema.SCHEMA_MAX_CATEGORIES`
#: because this list is enforced on live requests: only a small closed set of values
#: earns it, where a longer list is more likely a sample of free text.
SNAPSHOT_MAX_CATEGORIES = 50
#: Parquet settings fixed here because the bytes are the snapshot's identity.
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "row_group_size": 1 << 20,
    "write_statistics": True,
}


@dataclass(frozen=True)
class Snapshot:
    id: str
    n_rows: int
    size_bytes: int
    schema: dict[str, Any]
    time_column: str | None
    time_min: float | None
    time_max: float | None
    sources: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def describe_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """The snapshot schema of a table: each column's type, nullability and range or categories."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name]
        entry: dict[str, Any] = {"nullable": bool(values.isna().any())}
        present = values.dropna()
        if pd.api.types.is_bool_dtype(values):
            entry["type"] = "boolean"
        elif pd.api.types.is_datetime64_any_dtype(values):
            entry["type"] = "timestamp"
            if len(present):
                seconds = epoch_seconds(present)
                entry["min"], entry["max"] = _finite(seconds.min()), _finite(seconds.max())
        elif pd.api.types.is_numeric_dtype(values):
            entry["type"] = "numeric"
            if len(present):
                entry["min"], entry["max"] = _finite(present.min()), _finite(present.max())
        else:
            distinct = pd.unique(present.astype(str))
            if isinstance(values.dtype, pd.CategoricalDtype) or len(distinct) <= SNAPSHOT_MAX_CATEGORIES:
                entry["type"] = "categorical"
                entry["categories"] = sorted(str(v) for v in distinct)
            else:
                entry["type"] = "string"
        columns[str(name)] = {"type": entry.pop("type"), **entry}
    return {"columns": columns}


def table_bytes(frame: pd.DataFrame | pa.Table) -> bytes:
    """The canonical Parquet bytes of a table (no index, fixed writer settings)."""
    table = frame if isinstance(frame, pa.Table) else arrow_table(frame)
    # Dictionary encoding pays for text columns only; tried on numbers it costs half the write.
    text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    sink = io.BytesIO()
    pq.write_table(table, sink, use_dictionary=text, **_PARQUET_OPTIONS)
    return sink.getvalue()


def take_snapshot(
    store: Store,
    frame: pd.DataFrame,
    *,
    sources: Iterable[str] = (),
    time_column: str | None = None,
    data: bytes | None = None,
) -> Snapshot:
    """Freeze ``frame`` in the artifact store and record it; idempotent by content.

    ``data``: the frame's :func:`table_bytes`, when the caller has already made them.
    """
    if data is None:
        data = table_bytes(frame)
    digest = store.artifacts.put(data)
    time_min = time_max = None
    if time_column and time_column in frame.columns and len(frame):
        times = epoch_seconds(frame[time_column])
        if np.isfinite(times).any():
            time_min, time_max = float(np.nanmin(times)), float(np.nanmax(times))
    store.lineage.record_snapshot(
        digest,
        n_rows=len(frame),
        schema=describe_columns(frame),
        size_bytes=len(data),
        sources=sources,
        time_column=time_column,
        time_min=time_min,
        time_max=time_max,
    )
    return get_snapshot(store, digest)


def get_snapshot(store: Store, snapshot_id: str) -> Snapshot:
    """The record of a snapshot (raises NotFoundError naming the id when there is none)."""
    with store.db.read() as conn:
        info = snapshot_info(conn, snapshot_id)
    return Snapshot(
        id=info["id"],
        n_rows=int(info["n_rows"]),
        size_bytes=int(info["size_bytes"]),
        schema=info["schema"],
        time_column=info["time_column"],
        time_min=info["time_min"],
        time_max=info["time_max"],
        sources=list(info["sources"]),
    )


def load_snapshot(store: Store, snapshot_id: str) -> pd.DataFrame:
    """The table of a snapshot, read from bytes whose hash the artifact store has checked."""
    get_snapshot(store, snapshot_id)
    return pq.read_table(io.BytesIO(store.artifacts.get(snapshot_id))).to_pandas()
