"""Reading the serving logs for a cycle: the recent served rows, and the labelled ones.

The layout is in ``docs/logs.md``: Parquet partitions of predictions and feedback per
model, through fsspec. Only the columns and rows a window needs are read.
"""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

LOG_KINDS = ("predictions", "feedback")


def _dataset(logs_url: str, kind: str, model: str) -> ds.Dataset | None:
    fs, root = fsspec.core.url_to_fs(logs_url)
    path = f"{root.rstrip('/')}/{kind}/model={model}"
    if not fs.exists(path):
        return None
    files = [f for f in fs.find(path) if f.endswith(".parquet")]
    if not files:
        return None
    return ds.dataset(files, filesystem=fs, format="parquet", partitioning=None)


def read_log(
    logs_url: str,
    kind: str,
    model: str,
    *,
    since: float | None = None,
    until: float | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows of one log with ``since < ts <= until`` (either bound optional), oldest first."""
    if kind not in LOG_KINDS:
        raise ValueError(f"log kind must be one of {LOG_KINDS}, got {kind!r}")
    dataset = _dataset(logs_url, kind, model)
    if dataset is None:
        return pa.table({"ts": pa.array([], pa.float64())})
    condition = None
    if since is not None:
        condition = ds.field("ts") > since
    if until is not None:
        upper = ds.field("ts") <= until
        condition = upper if condition is None else condition & upper
    wanted = None if columns is None else [c for c in columns if c in dataset.schema.names]
    table = dataset.to_table(filter=condition, columns=wanted)
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [("ts", "ascending")]))
    return table


def labelled(
    logs_url: str, model: str, *, at: float, since: float | None = None, arms: tuple[str, ...] = ("champion",)
) -> pa.Table:
    """Predictions of ``arms`` joined with the labels that had arrived by ``at``."""
    preds = read_log(logs_url, "predictions", model, since=since, until=at)
    if preds.num_rows == 0 or "arm" not in preds.column_names:
        return pa.table({})
    mask = pc.is_in(preds["arm"], value_set=pa.array(list(arms)))
    preds = preds.filter(mask)
    labels = read_log(logs_url, "feedback", model, until=at, columns=["request_id", "label", "ts"])
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


def realized_metric(table: pa.Table, metric: str, task: str) -> float | None:
    """``metric`` of logged predictions against their labels.

    None without rows, or for a metric that needs probabilities when the log holds none
    (only binary models log one, the positive class's ``score``) or that is undefined on
    these rows (ROC AUC with one class). Classification labels and predictions are compared
    as numbers when both are numbers, else as text.
    """
    from evertrain.evaluate.metrics import Outputs, get_metric

    if table.num_rows == 0:
        return None
    measure = get_metric(metric)
    if task == "regression":
        label = np.asarray(table["label"], dtype=float)
        value = measure(Outputs.regression(label, np.asarray(table["prediction"], dtype=float)))
        return value if np.isfinite(value) else None
    pred, label = table["prediction"], table["label"]
    numeric = all(pa.types.is_floating(c.type) or pa.types.is_integer(c.type) for c in (pred, label))
    if numeric:
        y, p = np.asarray(label, dtype=float), np.asarray(pred, dtype=float)
    else:
        y, p = (np.asarray(pc.cast(c, pa.string()).fill_null("")) for c in (label, pred))
    classes = np.unique(np.concatenate([y, p]))
    y_index, p_index = np.searchsorted(classes, y), np.searchsorted(classes, p)
    proba = None
    if measure.needs_proba:
        scores = table["score"] if "score" in table.column_names else None
        if not numeric or scores is None or scores.null_count or not set(classes.tolist()) <= {0.0, 1.0}:
            return None
        s = np.asarray(scores, dtype=float)
        proba, y_index, p_index = np.column_stack([1.0 - s, s]), y.astype(int), p.astype(int)
    kind = "binary" if proba is not None or len(classes) <= 2 else "multiclass"
    value = measure(Outputs(kind, y_index, p_index, proba))
    return value if np.isfinite(value) else None
