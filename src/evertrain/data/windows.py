"""Training windows that are correct at a point in time.

Given every row a source holds and a cut-off (the training time), a window keeps only
rows whose label had *arrived* by the cut-off: the label time column when the spec
names one, else event time + ``label_delay``. A label that arrives later does not
exist yet for this training, so no future leaks in. A row labelled twice (an ``id``
seen twice) counts once, with the newest label known at the cut-off.

Then, on the rows ordered by event time:

1. the window: ``sliding`` (the last N rows or the last T seconds before the cut-off),
   ``expanding`` (all), or ``weighted`` (all, or limited like sliding, with sample
   weights halving every ``half_life`` of age behind the newest training row);
2. the holdout: the newest slice of the window (a share of rows, or a span of time),
   never trained on, on which challenger and champion are judged; a share is raised
   towards ``holdout.min_rows`` (at most a third of the rows) so that the gate's test
   can see a difference that matters;
3. the valid part: the newest ``valid_fraction`` of what is left, for early stopping
   and for choosing among candidate training sets;
4. the train part: the rest.

A *change hint* (``change_at``: when a drift or a decay began, from the policy) never
narrows the window. It moves the judging to the new data: the holdout and the valid part
are then cut from the rows after the change (each sized as above, on those rows), so
that the gate and the choice of training set look at the data the model will serve;
every older row of the window stays in the train part.

Everything here is a pure function of a table, a spec and a cut-off.

>>> import pandas as pd
>>> from evertrain.spec import Spec
>>> spec = Spec.model_validate({"model": {"name": "m", "target": "y"},
...     "data": {"source": {"kind": "csv", "path": "x.csv"}, "time_column": "t", "label_delay": 10}})
>>> rows = pd.DataFrame({"t": range(100), "x": range(100), "y": [0, 1] * 50})
>>> w = make_window(rows, spec, cutoff=99.0)
>>> len(w.train) + len(w.valid) + len(w.holdout), int(w.holdout["t"].max())
(90, 89)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evertrain.data.sources import LOG_COLUMNS, LOG_LABEL_TIME
from evertrain.exceptions import DataValidationError, SpecError

#: Column holding the weight of each training row (weighted windows, up-weighted candidates).
WEIGHT_COLUMN = "__sample_weight__"
#: The most a holdout or valid part is raised to (share of the rows it is cut from) to
#: reach ``holdout.min_rows``: two thirds stay for training, so a small window is not
#: starved to give the gate power.
MAX_RAISED_SHARE = 1 / 3
#: Fewest rows after a change hint for the hint to move the judging onto them: a third
#: of fewer (the holdout) could not tell two models apart; the window is judged as usual.
MIN_ROWS_AFTER_CHANGE = 100


@dataclass(frozen=True)
class Columns:
    """What each column of the table is for, resolved from the spec and the table."""

    target: str
    features: list[str]
    time: str | None = None
    label_time: str | None = None
    id: str | None = None


def resolve_columns(spec: Any, frame: pd.DataFrame) -> Columns:
    """The roles of the columns: the spec's, with the ``log`` source's own names as defaults.

    Features default to every column but the target, times, id, the sample weight and,
    for a log source, the columns the serving logs add around the features.
    """
    data, model = spec.data, spec.model
    time_col, label_col, id_col = data.time_column, data.label_time_column, data.id_column
    reserved: set[str] = {WEIGHT_COLUMN}
    if data.source.kind == "log":
        time_col = time_col or "ts"
        label_col = label_col or LOG_LABEL_TIME
        id_col = id_col or "request_id"
        reserved |= set(LOG_COLUMNS) | {LOG_LABEL_TIME}
    for role, column in (
        ("target", model.target),
        ("time_column", time_col),
        ("label_time_column", label_col),
        ("id_column", id_col),
    ):
        if column is not None and column not in frame.columns:
            raise DataValidationError(
                f"{role} {column!r} is not a column of the data "
                f"(columns: {', '.join(map(str, frame.columns))})"
            )
    reserved |= {c for c in (model.target, time_col, label_col, id_col) if c}
    if model.features is not None:
        missing = [f for f in model.features if f not in frame.columns]
        if missing:
            raise DataValidationError(
                f"feature(s) {', '.join(map(repr, missing))} are not columns of the data"
            )
        features = list(model.features)
    else:
        features = [str(c) for c in frame.columns if c not in reserved]
    if not features:
        raise DataValidationError(
            "no feature columns are left once target, time and id columns are set aside"
        )
    return Columns(target=model.target, features=features, time=time_col, label_time=label_col, id=id_col)


def epoch_seconds(values: pd.Series) -> np.ndarray:
    """Epoch seconds (float) from numbers, timestamps or ISO strings; naive timestamps are UTC."""
    if pd.api.types.is_bool_dtype(values):
        raise DataValidationError(f"time column {values.name!r}: expected times, got booleans")
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    try:
        stamps = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        sample = ", ".join(map(repr, values.dropna().astype(str).head(3)))
        raise DataValidationError(f"time column {values.name!r}: not times ({sample}, ...): {exc}") from None
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return np.asarray(seconds.to_numpy(dtype=float, na_value=np.nan), dtype=float)


@dataclass
class Window:
    """The parts of one training window, each ordered by event time."""

    train: pd.DataFrame
    valid: pd.DataFrame
    holdout: pd.DataFrame
    columns: Columns
    cutoff: float
    info: dict[str, Any] = field(default_factory=dict)


def known_at(frame: pd.DataFrame, columns: Columns, label_delay: float, cutoff: float) -> pd.DataFrame:
    """Rows whose event had happened and whose label had arrived by ``cutoff``.

    Without any time column, every labelled row counts as known (there is no clock to
    honour). With an id column, a row labelled twice keeps its newest label known then.
    """
    labelled = frame[columns.target].notna().to_numpy()
    keep = labelled.copy()
    event = epoch_seconds(frame[columns.time]) if columns.time else None
    if columns.label_time:
        arrived = epoch_seconds(frame[columns.label_time])
    elif event is not None:
        arrived = event + label_delay
    else:
        arrived = None
    if event is not None:
        keep &= event <= cutoff
    if arrived is not None:
        keep &= arrived <= cutoff
    out = frame.loc[keep]
    if columns.id and len(out):
        order = np.argsort(arrived[keep], kind="stable") if arrived is not None else np.arange(len(out))
        out = out.iloc[order].drop_duplicates(columns.id, keep="last")
    if columns.time:
        out = out.iloc[np.argsort(epoch_seconds(out[columns.time]), kind="stable")]
    return out.reset_index(drop=True)


def _window_rows(known: pd.DataFrame, spec: Any, columns: Columns, cutoff: float) -> pd.DataFrame:
    window = spec.training.window
    if window.kind == "expanding":
        return known
    out = known
    if window.duration is not None:
        if not columns.time:
            raise SpecError(f"training.window.duration needs data.time_column ({window.kind} window)")
        out = out[epoch_seconds(out[columns.time]) > cutoff - window.duration]
    if window.rows is not None:
        out = out.iloc[-window.rows :]
    return out.reset_index(drop=True)


def recency_weights(times: np.ndarray, half_life: float) -> np.ndarray:
    """Weights halving every ``half_life`` seconds of age, the newest row weighing 1.

    Age counts from the newest row rather than from the cut-off: weights are relative, and
    measured from a cut-off long after the data they would all underflow towards zero.

    >>> recency_weights(np.array([0.0, 10.0, 20.0]), 10.0).tolist()
    [0.25, 0.5, 1.0]
    """
    if half_life <= 0:
        raise SpecError(f"training.window.half_life must be positive, got {half_life}")
    if not len(times):
        return np.ones(0)
    return np.power(0.5, (np.nanmax(times) - times) / half_life)


def newest_count(n: int, fraction: float, min_rows: int = 0) -> int:
    """How many of ``n`` rows the newest part takes: ``fraction`` of them (rounded up), raised
    towards ``min_rows`` but never past a third of the rows.

    >>> newest_count(10_000, 0.2, 1000), newest_count(2_000, 0.2, 1000), newest_count(90, 0.2, 0)
    (2000, 666, 18)
    """
    share = math.ceil(n * fraction) if fraction > 0 else 0
    return max(share, min(min_rows, int(n * MAX_RAISED_SHARE)))


def _split_newest(frame: pd.DataFrame, n_new: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = len(frame) - min(n_new, len(frame))
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def _after(frame: pd.DataFrame, columns: Columns, change_at: float | None) -> int:
    """How many of the (time-ordered) rows of ``frame`` came after ``change_at``."""
    if change_at is None or not columns.time or not len(frame):
        return 0
    return int((epoch_seconds(frame[columns.time]) >= change_at).sum())


def make_window(frame: pd.DataFrame, spec: Any, cutoff: float, *, change_at: float | None = None) -> Window:
    """Split a source table into train, valid and holdout as known at ``cutoff``.

    ``change_at``: when the data changed (a hint from the policy); the holdout and the
    valid part are then cut from the rows after it, the window itself is unchanged.
    """
    columns = resolve_columns(spec, frame)
    known = known_at(frame, columns, spec.data.label_delay, cutoff)
    rows = _window_rows(known, spec, columns, cutoff)
    holdout_spec = spec.training.holdout
    min_rows = int(getattr(holdout_spec, "min_rows", 0) or 0)
    n_after = _after(rows, columns, change_at)
    if n_after < MIN_ROWS_AFTER_CHANGE:
        n_after = 0
    # the rows the newest parts are sized on: those after the change, when there are some
    judged = n_after if n_after else len(rows)
    if holdout_spec.duration is not None:
        if not columns.time:
            raise SpecError("training.holdout.duration needs data.time_column")
        times = epoch_seconds(rows[columns.time])
        newest = times.max() if len(times) else cutoff
        is_holdout = times > newest - holdout_spec.duration
        rest, holdout = rows[~is_holdout].reset_index(drop=True), rows[is_holdout].reset_index(drop=True)
    else:
        rest, holdout = _split_newest(rows, newest_count(judged, holdout_spec.fraction, min_rows))
    rest_after = _after(rest, columns, change_at) if n_after else 0
    if rest_after:
        # the choice among training sets is a comparison like the gate's: as many rows
        n_valid = newest_count(rest_after, spec.training.valid_fraction, min_rows)
    else:
        n_valid = newest_count(len(rest), spec.training.valid_fraction)
    train, valid = _split_newest(rest, n_valid)
    if len(train) == 0:
        raise DataValidationError(
            f"the training window at cut-off {cutoff} has no training rows: {len(frame)} rows in the source, "
            f"{len(known)} labelled by then, {len(rows)} in the window, {len(holdout)} held out"
        )
    window = spec.training.window
    if window.kind == "weighted":
        if not columns.time:
            raise SpecError("a weighted window needs data.time_column to age rows")
        train = train.assign(
            **{WEIGHT_COLUMN: recency_weights(epoch_seconds(train[columns.time]), window.half_life)}
        )
    info = {
        "cutoff": cutoff,
        "window": window.kind,
        "n_source": len(frame),
        "n_known": len(known),
        "n_not_yet_labelled": int(len(frame) - len(known)),
        "n_window": len(rows),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_holdout": len(holdout),
    }
    if change_at is not None:
        info["change_at"] = float(change_at)
        info["n_after_change"] = n_after
        info["n_train_after_change"] = _after(train, columns, change_at)
    if columns.time:
        for name, part in (("train", train), ("holdout", holdout)):
            if len(part):
                times = epoch_seconds(part[columns.time])
                info[f"{name}_time_range"] = [float(times.min()), float(times.max())]
    return Window(train=train, valid=valid, holdout=holdout, columns=columns, cutoff=cutoff, info=info)
