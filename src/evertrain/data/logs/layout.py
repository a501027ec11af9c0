"""The layout of the prediction, feedback and error logs (``docs/logs.md``), written down once.

Parquet parts, one folder per log, model and UTC day of the rows' ``ts``::

    <logs>/predictions/model=<name>/date=<YYYY-MM-DD>/part-<first>-<last>-<rows>-<id>.parquet
    <logs>/feedback/model=<name>/date=<YYYY-MM-DD>/part-<first>-<last>-<rows>-<id>.parquet
    <logs>/errors/model=<name>/date=<YYYY-MM-DD>/part-<first>-<last>-<rows>-<id>.parquet

``first`` and ``last`` are the smallest and largest ``ts`` of the part's rows in whole
milliseconds (rounded down and up), ``rows`` its row count: a reader skips a part outside
its time bounds, and counts rows, from the name alone. A part made by compaction is
named ``compact-...`` the same way, and lists the parts whose rows it holds in its
Parquet metadata (:data:`REPLACES_KEY`); a reader that sees both reads only the larger.
Parts named ``part-<id>.parquet`` (older writers) are read, never skipped by name.

The columns each log begins with are below; a prediction row's input features follow.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
ERRORS = "errors"
KINDS = (PREDICTIONS, FEEDBACK, ERRORS)

# Columns of each log that come first, in this order (docs/logs.md); features follow.
PREDICTION_COLUMNS = {
    "request_id": "string",
    "ts": "float64",
    "model_version": "int64",
    "arm": "string",
    "latency_ms": "float64",
    "prediction": "float64",  # or string, per version
    "score": "float64",
}
FEEDBACK_COLUMNS = {"request_id": "string", "label": "float64", "ts": "float64"}
ERROR_COLUMNS = {
    "request_id": "string",
    "ts": "float64",
    "model_version": "int64",
    "arm": "string",
    "latency_ms": "float64",
    "kind": "string",
    "error": "string",
}


def partition_date(ts: float) -> str:
    """The UTC day of epoch seconds ``ts``, as the log partitions name it."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def model_folder(root: str, kind: str, model: str) -> str:
    """The folder of every part of one log of one model, under the logs' ``root`` path."""
    return f"{root.rstrip('/')}/{kind}/model={model}"


def partition_folder(root: str, kind: str, model: str, date: str) -> str:
    """The folder of one day's parts of one log of one model."""
    return f"{model_folder(root, kind, model)}/date={date}"


PART_PREFIX = "part-"
COMPACT_PREFIX = "compact-"
#: Parquet metadata key of a compacted part: the JSON list of the part names whose rows it holds.
REPLACES_KEY = b"evertrain.replaces"


@dataclass(frozen=True)
class PartName:
    """What a part's file name says: its time range (epoch seconds, whole ms), rows, and kind."""

    name: str
    first: float | None
    last: float | None
    rows: int | None
    compacted: bool

    def overlaps(self, since: float | None, until: float | None) -> bool:
        """Whether rows of this part may lie within ``[since, until]`` (True when the name cannot say)."""
        if self.first is None or self.last is None:
            return True
        if since is not None and self.last < since:
            return False
        return not (until is not None and self.first > until)

    def within(self, since: float | None, until: float | None) -> bool:
        """Whether every row of this part lies strictly inside ``(since, until)``."""
        if self.first is None or self.last is None:
            return False
        return (since is None or self.first > since) and (until is None or self.last < until)


def part_name(first: float, last: float, rows: int, token: str, *, compacted: bool = False) -> str:
    """The file name of a part whose rows' ``ts`` span ``first`` to ``last``."""
    prefix = COMPACT_PREFIX if compacted else PART_PREFIX
    lo = max(0, math.floor(first * 1000.0))
    hi = max(lo, math.ceil(last * 1000.0))
    return f"{prefix}{lo}-{hi}-{rows}-{token}.parquet"


def parse_part_name(name: str) -> PartName | None:
    """The :class:`PartName` of a finished part's file name; None for anything else (a temporary
    file, a hidden file, a file of another layout)."""
    if name.startswith((".", "_")) or not name.endswith(".parquet"):
        return None
    fields = name[: -len(".parquet")].split("-")
    if len(fields) == 5 and fields[0] in ("part", "compact") and all(f.isdigit() for f in fields[1:4]):
        first, last, rows = (int(f) for f in fields[1:4])
        return PartName(name, first / 1000.0, last / 1000.0, rows, fields[0] == "compact")
    if name.startswith(PART_PREFIX):
        return PartName(name, None, None, None, False)
    return None
