"""Compaction: many small log parts of one day made into a few large ones, safely while replicas write.

Every replica writes a part about every second under traffic, so a day of logs is
thousands of small files, and every read would list and open them all. Compaction reads
the small parts of one log, model and day, writes their rows (ordered by time) as one
``compact-...`` part, and only then deletes them. The new part lists the parts it holds
in its Parquet metadata, so a reader that lists both (between the write and the delete)
reads only the larger one, and a reader that listed a part just deleted lists again
(:func:`evertrain.data.logs.reader.list_parts`). A compaction that died after writing
its part is finished by the next one, which deletes the parts already held.

The name of a compacted part is fixed by the set of parts it holds, so two compactions of
the same parts write the same object. Run one compaction at a time per logs location
(``evertrain logs compact`` and the controller take a lease in the metadata store for it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evertrain.data.logs.layout import KINDS, REPLACES_KEY, part_name, partition_folder
from evertrain.data.logs.reader import Part, _replaced, _unify, list_parts
from evertrain.data.logs.writer import put_bytes
from evertrain.store.storage import fresh_ls, open_fs, storage_errors

#: A part with fewer rows than this is small, and compacted with the others of its day.
SMALL_ROWS = 50_000
#: A compacted part holds about this many rows at most.
TARGET_ROWS = 500_000


@dataclass
class CompactResult:
    """What one compaction did: parts before and after, rows moved, parts deleted."""

    parts_before: int = 0
    parts_after: int = 0
    rows: int = 0
    written: list[str] = field(default_factory=list)
    deleted: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "parts_before": self.parts_before,
            "parts_after": self.parts_after,
            "rows": self.rows,
            "written": len(self.written),
            "deleted": self.deleted,
        }


def models_of(logs_url: str, kind: str) -> list[str]:
    """The models that have a ``kind`` log under ``logs_url``."""
    fs, root = open_fs(logs_url)
    with storage_errors(logs_url, f"list the {kind} logs"):
        folders = fresh_ls(fs, f"{root.rstrip('/')}/{kind}")
    return [
        f.rsplit("/", 1)[-1][len("model=") :] for f in folders if f.rsplit("/", 1)[-1].startswith("model=")
    ]


def compact(
    logs_url: str,
    *,
    kinds: tuple[str, ...] = KINDS,
    models: list[str] | None = None,
    small_rows: int = SMALL_ROWS,
    target_rows: int = TARGET_ROWS,
) -> CompactResult:
    """Compact the small parts of every day of the ``kinds`` logs of ``models`` (all when None)."""
    result = CompactResult()
    fs, root = open_fs(logs_url)
    root = root.rstrip("/")
    with storage_errors(logs_url, "compact the logs"):
        for kind in kinds:
            for model in models if models is not None else models_of(logs_url, kind):
                parts = _all_parts(fs, root, kind, model)
                result.parts_before += len(parts)
                by_day: dict[str, list[Part]] = {}
                for part in parts:
                    by_day.setdefault(part.day, []).append(part)
                for day, day_parts in sorted(by_day.items()):
                    _compact_day(fs, root, kind, model, day, day_parts, small_rows, target_rows, result)
                result.parts_after += len(_all_parts(fs, root, kind, model))
    return result


def _all_parts(fs: fsspec.AbstractFileSystem, root: str, kind: str, model: str) -> list[Part]:
    return list_parts(fs, root, kind, model)


def _compact_day(
    fs: fsspec.AbstractFileSystem,
    root: str,
    kind: str,
    model: str,
    day: str,
    parts: list[Part],
    small_rows: int,
    target_rows: int,
    result: CompactResult,
) -> None:
    folder = partition_folder(root, kind, model, day)
    # Finish what a compaction that died left: parts already held by a compacted part go.
    listed = {p.rsplit("/", 1)[-1] for p in fresh_ls(fs, folder)}
    for part in parts:
        if part.info.compacted:
            for name in _replaced(fs, part):
                if name in listed:
                    _delete(fs, f"{folder}/{name}", result)
    small = [p for p in parts if p.info.rows is None or p.info.rows < small_rows]
    groups: list[list[Part]] = []
    current: list[Part] = []
    rows = 0
    for part in sorted(small, key=lambda p: (p.info.first or 0.0, p.path)):
        n = part.info.rows or small_rows
        if current and rows + n > target_rows:
            groups.append(current)
            current, rows = [], 0
        current.append(part)
        rows += n
    if current:
        groups.append(current)
    for group in groups:
        if len(group) < 2:
            continue
        read: list[tuple[Part, pa.Table]] = []
        for part in group:
            try:
                read.append((part, pq.read_table(part.path, filesystem=fs)))
            except FileNotFoundError:
                continue  # another compaction took it; it is held elsewhere now
        if len(read) < 2:
            continue
        held = [p.info.name for p, _ in read]
        table = _unify([t for _, t in read])
        table = table.take(pc.sort_indices(table, [("ts", "ascending")]))
        token = hashlib.sha256("\n".join(sorted(held)).encode()).hexdigest()[:32]
        lo, hi = pc.min(table["ts"]).as_py(), pc.max(table["ts"]).as_py()
        name = part_name(float(lo), float(hi), table.num_rows, token, compacted=True)
        meta = dict(table.schema.metadata or {})
        meta[REPLACES_KEY] = json.dumps(sorted(held)).encode()
        table = table.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        # The larger part is committed (an object put, or a local rename) before any small one goes.
        put_bytes(fs, f"{folder}/{name}", sink.getvalue().to_pybytes())
        result.written.append(name)
        result.rows += table.num_rows
        for part, _ in read:
            _delete(fs, part.path, result)


def _delete(fs: fsspec.AbstractFileSystem, path: str, result: CompactResult) -> None:
    try:
        fs.rm_file(path)
        result.deleted += 1
    except FileNotFoundError:
        pass
