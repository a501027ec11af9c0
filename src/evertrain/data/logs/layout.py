"""The layout of the prediction, feedback and error logs (``docs/logs.md``), written down once.

Parquet parts, one folder per log, model and UTC day of the rows' ``ts``::

    <logs>/predictions/model=<name>/date=<YYYY-MM-DD>/part-<uuid>.parquet
    <logs>/feedback/model=<name>/date=<YYYY-MM-DD>/part-<uuid>.parquet
    <logs>/errors/model=<name>/date=<YYYY-MM-DD>/part-<uuid>.parquet

The columns each log begins with are below; a prediction row's input features follow.
"""

from __future__ import annotations

import datetime as dt

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
