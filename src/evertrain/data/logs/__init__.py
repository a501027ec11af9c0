"""The prediction, feedback and error logs: their layout, their writer and their reader.

Serving replicas write these logs; the controller's monitor, the rollout analysis and
the tests read them. All of them go through this package, which sits in ``data`` below
every one of its users, so the layout of ``docs/logs.md`` is written down once
(:mod:`~evertrain.data.logs.layout`), written by one writer
(:mod:`~evertrain.data.logs.writer`) and read by one reader
(:mod:`~evertrain.data.logs.reader`).
"""

from __future__ import annotations

from evertrain.data.logs.compact import CompactResult, compact
from evertrain.data.logs.layout import (
    ERROR_COLUMNS,
    ERRORS,
    FEEDBACK,
    FEEDBACK_COLUMNS,
    KINDS,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    model_folder,
    partition_date,
    partition_folder,
)
from evertrain.data.logs.reader import Inclusive, count_rows, labelled, list_parts, read_log, read_log_parts
from evertrain.data.logs.writer import LogMetrics, LogWriter

__all__ = [
    "ERRORS",
    "ERROR_COLUMNS",
    "FEEDBACK",
    "FEEDBACK_COLUMNS",
    "KINDS",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "CompactResult",
    "Inclusive",
    "LogMetrics",
    "LogWriter",
    "compact",
    "count_rows",
    "labelled",
    "list_parts",
    "model_folder",
    "partition_date",
    "partition_folder",
    "read_log",
    "read_log_parts",
]
