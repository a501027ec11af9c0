"""The evidence of a rollout window: what the serving logs say about each arm.

:func:`read_logs` reads the prediction, error and feedback logs of one model in one
window (``docs/logs.md``) through :mod:`evertrain.data.logs`, column by column;
:func:`evidence` takes one arm's (one version's) rows out of it. The checks of
:mod:`evertrain.rollout.analysis` judge two such evidences against each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from evertrain.data.logs import ERRORS, FEEDBACK, PREDICTIONS, partition_date, read_log_parts


def label_text(value: Any) -> str:
    """A label or prediction as text, a whole float as an integer, so that ``1.0`` and ``1`` compare equal."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Logs:
    """The rows of one model's logs in a window, column by column."""

    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)  # request_id -> newest label


def _columns(parts: list[pa.Table], columns: list[str]) -> dict[str, np.ndarray]:
    """``columns`` of the parts as arrays: text as objects, absent columns as None; a column two
    parts type differently (a version that predicts text after one that predicted numbers) is
    joined as objects, each value keeping its own type."""
    out: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for table in parts:
        for c in columns:
            if c in table.column_names:
                col = table.column(c)
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    out[c].append(np.asarray(col.to_pylist(), dtype=object))
                else:
                    out[c].append(col.to_numpy(zero_copy_only=False))
            else:
                out[c].append(np.full(table.num_rows, None, dtype=object))
    merged: dict[str, np.ndarray] = {}
    for c, arrays in out.items():
        if not arrays:
            merged[c] = np.array([], dtype=object)
        elif any(a.dtype == object for a in arrays) and not all(a.dtype == object for a in arrays):
            merged[c] = np.concatenate([a.astype(object) for a in arrays])
        else:
            merged[c] = np.concatenate(arrays)
    return merged


def read_logs(logs_url: str, model: str, start: float, end: float) -> Logs:
    """Prediction and error rows with ``start <= ts < end``, and every label that arrived since ``start``."""
    first, last = partition_date(start), partition_date(end)
    logs = Logs()

    def window(kind: str, columns: list[str]) -> dict[str, np.ndarray]:
        parts = read_log_parts(
            logs_url,
            kind,
            model,
            since=start,
            until=end,
            inclusive="left",
            columns=columns,
            first_date=first,
            last_date=last,
        )
        return _columns(parts, columns)

    logs.predictions = window(
        PREDICTIONS, ["request_id", "ts", "model_version", "arm", "latency_ms", "prediction", "score"]
    )
    logs.errors = window(ERRORS, ["request_id", "ts", "model_version", "arm", "latency_ms", "kind"])
    # Labels arrive after their predictions: every day from the window's first on.
    label_cols = ["request_id", "label", "ts"]
    feedback = _columns(
        read_log_parts(logs_url, FEEDBACK, model, columns=label_cols, first_date=first),
        label_cols,
    )
    order = np.argsort(feedback["ts"].astype(np.float64), kind="stable")
    for rid, label in zip(feedback["request_id"][order], feedback["label"][order], strict=True):
        logs.labels[rid] = label
    return logs


@dataclass(frozen=True)
class Evidence:
    """What the logs say about one arm (one version) in the window."""

    arm: str
    version: int
    n: int
    errors: int
    latency_ms: np.ndarray
    predictions: np.ndarray
    scores: np.ndarray
    labelled: np.ndarray  # predictions of rows that have a label
    labels: np.ndarray


def evidence(logs: Logs, arm: str, version: int) -> Evidence:
    p = logs.predictions
    if p.get("arm") is None or len(p["arm"]) == 0:
        mask = np.zeros(0, dtype=bool)
    else:
        mask = (p["arm"] == arm) & (p["model_version"].astype(np.int64) == version)
    e = logs.errors
    n_err = 0
    if e.get("arm") is not None and len(e["arm"]):
        n_err = int(((e["arm"] == arm) & (e["model_version"].astype(np.int64) == version)).sum())
    if not mask.any():
        empty = np.array([], dtype=np.float64)
        return Evidence(
            arm,
            version,
            0,
            n_err,
            empty,
            np.array([], dtype=object),
            empty,
            np.array([], dtype=object),
            np.array([], dtype=object),
        )
    ts = p["ts"][mask].astype(np.float64)
    lat = np.asarray([np.nan if v is None else v for v in p["latency_ms"][mask]], dtype=np.float64)
    timed = np.isfinite(lat)  # replayed rows carry no latency
    # Rows of one request share its time and latency: count each request once.
    pairs = np.unique(np.stack([ts[timed], lat[timed]]), axis=1)
    preds = p["prediction"][mask]
    scores = p["score"][mask]
    scores = np.asarray(
        [s for s in scores if s is not None and not (isinstance(s, float) and math.isnan(s))],
        dtype=np.float64,
    )
    ids = p["request_id"][mask]
    labelled, labels = [], []
    for rid, pred in zip(ids, preds, strict=True):
        if rid in logs.labels:
            labelled.append(pred)
            labels.append(logs.labels[rid])
    return Evidence(
        arm,
        version,
        int(mask.sum()),
        n_err,
        pairs[1],
        preds,
        scores,
        np.asarray(labelled, dtype=object),
        np.asarray(labels, dtype=object),
    )
