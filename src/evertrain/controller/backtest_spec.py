"""What a backtest replays: the table checked, the default spec inferred from it, the spec as replayed.

Outside a project a backtest has no spec; :func:`default_spec` makes one from the table
(every default of evertrain.yaml, the target named, the task of the target column, the
numeric and categorical columns as features). Inside one, the project's spec is replayed
as written except for its source (the replay's warehouse folder) and its executor
(in-process): :func:`replay_spec`.

>>> import pandas as pd
>>> frame = pd.DataFrame({"x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
>>> spec = default_spec(frame, "y")
>>> spec.model.task, spec.model.features
('binary', ['x'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from evertrain.data.schema import infer_schema
from evertrain.exceptions import DataValidationError, UsageError
from evertrain.monitor.tests import CATEGORICAL, NUMERIC
from evertrain.spec import SourceSpec, Spec

#: Fewest batches a backtest replays after the warm ones: one to serve with the first
#: model, one more for anything the loop decided after it to show.
MIN_REPLAYED_BATCHES = 2
#: Name of the model inside the throwaway project.
MODEL_NAME = "backtest"
#: Where the replay writes labelled rows, relative to the throwaway project.
WAREHOUSE_GLOB = "warehouse/*.parquet"
#: Event and label-arrival time columns the replay writes when the spec names none.
EVENT_TIME, LABEL_TIME = "event_ts", "label_ts"
#: A target with at most this many distinct integer values is a class label, not a number.
MAX_CLASSES = 20


def task_of_target(values: pd.Series) -> str:
    """binary, multiclass or regression, from the target column's values.

    Booleans and text are classes; integers with at most :data:`MAX_CLASSES` distinct
    values are classes; any other number is a regression target.

    >>> [task_of_target(pd.Series(v)) for v in ([0, 1, 1], ["a", "b", "c"], [0.5, 2.0])]
    ['binary', 'multiclass', 'regression']
    """
    distinct = values.dropna().unique()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        as_float = np.asarray(distinct, dtype=float)
        whole = bool(np.all(np.isfinite(as_float)) and np.all(as_float == np.round(as_float)))
        if not whole or len(distinct) > MAX_CLASSES:
            return "regression"
    return "binary" if len(distinct) <= 2 else "multiclass"


def as_frame(table: pd.DataFrame | pa.Table) -> pd.DataFrame:
    """The table as pandas with text column names (the spec names columns by text)."""
    if isinstance(table, pa.Table):
        table = table.to_pandas()
    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True).rename(columns=str)
    raise UsageError(f"a backtest replays a pandas DataFrame or a pyarrow Table, got {type(table).__name__}")


def default_spec(frame: pd.DataFrame, target: str, *, name: str = MODEL_NAME) -> Spec:
    """The default spec for ``frame``: every default of evertrain.yaml, the target named, the
    task inferred from it, and the features inferred from the table's schema (its numeric
    and categorical columns)."""
    schema = infer_schema(frame.drop(columns=[target]))
    features = [c.name for c in schema.columns.values() if c.kind in (NUMERIC, CATEGORICAL)]
    if not features:
        raise DataValidationError(
            f"no feature columns: a backtest needs numeric or categorical columns besides the target "
            f"{target!r}, got {list(frame.columns)}"
        )
    return Spec.model_validate(
        {
            "model": {
                "name": name,
                "task": task_of_target(frame[target]),
                "target": target,
                "features": features,
            },
            "data": {"source": {"kind": "parquet", "path": WAREHOUSE_GLOB}},
        }
    )


#: Column names taken for label-arrival times when ``--label-time-column`` names none
#: (compared without case).
LABEL_TIME_NAMES = ("label_ts", "label_time", "label_timestamp", "labelled_at", "labeled_at", "label_at")


def find_label_time(frame: pd.DataFrame) -> str | None:
    """The table's label-arrival time column, when one is named like :data:`LABEL_TIME_NAMES`.

    >>> find_label_time(pd.DataFrame({"x": [1], "Label_TS": [2.0], "y": [0]}))
    'Label_TS'
    """
    for column in frame.columns:
        if str(column).lower() in LABEL_TIME_NAMES:
            return str(column)
    return None


def order_by_time(
    frame: pd.DataFrame,
    *,
    time_column: str | None,
    label_time_column: str | None,
    batch_size: int,
    what: str,
) -> tuple[pd.DataFrame, int | None]:
    """The table sorted by its time column (stable), without its time columns, and the label
    delay in batches its label times imply (None when it has none).

    A row's label arrives with the first batch whose newest event is at or after the row's
    label time; the delay of the table is the median over rows of that batch less the row's
    own, since a replay delivers a batch's labels together.
    """
    from evertrain.data.windows import epoch_seconds

    for role, column in (("time", time_column), ("label time", label_time_column)):
        if column is not None and column not in frame.columns:
            shown = ", ".join(map(str, list(frame.columns)[:10]))
            raise DataValidationError(
                f"{what}: {role} column {column!r} is not in the table (columns: {shown})"
            )
    delay = None
    if time_column is not None:
        event = epoch_seconds(frame[time_column])
        if np.isnan(event).any():
            raise DataValidationError(
                f"{what}: time column {time_column!r} has {int(np.isnan(event).sum())} missing values"
            )
        order = np.argsort(event, kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
        if label_time_column is not None:
            event = event[order]
            labelled = epoch_seconds(frame[label_time_column])
            own = np.arange(len(frame)) // batch_size
            batch_end = pd.Series(event).groupby(own).max().to_numpy()
            arrival = np.searchsorted(batch_end, np.where(np.isnan(labelled), np.inf, labelled), side="left")
            delay = int(np.ceil(np.median(np.maximum(arrival - own, 0))))
    elif label_time_column is not None:
        raise UsageError(f"{what}: label times ({label_time_column!r}) need the event time column too")
    drop = [c for c in (time_column, label_time_column) if c is not None]
    return frame.drop(columns=drop), delay


def replay_spec(spec: Spec) -> Spec:
    """``spec`` as the replay runs it: the warehouse as its source and in-process training;
    every policy, trigger, window, gate and rollout step as written."""
    data = spec.data.model_copy(
        update={
            "source": SourceSpec(kind="parquet", path=WAREHOUSE_GLOB),
            "time_column": spec.data.time_column or EVENT_TIME,
            "label_time_column": spec.data.label_time_column or LABEL_TIME,
            "id_column": None,
        }
    )
    training = spec.training.model_copy(update={"executor": "inline"})
    return spec.model_copy(update={"data": data, "training": training})


def encode_target(frame: pd.DataFrame, target: str, task: str) -> tuple[pd.DataFrame, list[Any] | None]:
    """Class labels as 0..K-1 (sorted order): the replay logs labels as numbers."""
    if task == "regression":
        return frame.assign(**{target: frame[target].astype(float)}), None
    values = frame[target]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return frame, None
    classes = sorted(values.unique().tolist(), key=str)
    codes = {c: i for i, c in enumerate(classes)}
    return frame.assign(**{target: values.map(codes).astype(np.int64)}), classes


def check_table(frame: pd.DataFrame, target: str, *, batch_size: int, warm_batches: int, what: str) -> None:
    """Refuse a table a backtest cannot replay, naming the rule and the bad value."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if warm_batches < 1:
        raise UsageError(
            f"warm batches must be at least 1 (the first model trains on them), got {warm_batches}"
        )
    if target not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:10])) + ("..." if frame.shape[1] > 10 else "")
        raise DataValidationError(f"{what}: target column {target!r} is not in the table (columns: {shown})")
    missing = int(frame[target].isna().sum())
    if missing:
        raise DataValidationError(
            f"{what}: target column {target!r} has {missing} missing values; "
            "a backtest needs every row labelled"
        )
    if frame[target].nunique() < 2:
        raise DataValidationError(
            f"{what}: target column {target!r} holds one value only ({frame[target].iloc[0]!r}): "
            "nothing to learn"
        )
    need = (warm_batches + MIN_REPLAYED_BATCHES) * batch_size
    if len(frame) < need - batch_size + 1:
        raise DataValidationError(
            f"{what}: too few rows: {len(frame)}; a backtest in batches of {batch_size} needs at least "
            f"{warm_batches + MIN_REPLAYED_BATCHES} batches "
            f"({warm_batches} warm, {MIN_REPLAYED_BATCHES} replayed), "
            f"i.e. more than {need - batch_size} rows"
        )
