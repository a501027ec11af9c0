"""The ``feast`` source: labelled rows with features from a Feast feature store, point-in-time correct.

The rows come from another source, ``entities`` (the labelled log, a warehouse table):
each holds the entity keys, the event time (``data.time_column``) and the label. Feast's
``get_historical_features`` adds to each row the value every feature had at that row's
event time, never a later one (a feature written after the event would leak the future
into training). The columns of a feature are named as in Feast without the view
(``customer_stats:spend`` gives ``spend``).

Feast pins pandas and tenacity below what evertrain runs with, so evertrain runs Feast in
the interpreter the project names (``python``: the Python of an environment with
``pip install feast``) through :mod:`evertrain.data.feast_worker`, passing Parquet files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from evertrain.data.source_base import Source, in_project
from evertrain.exceptions import DataValidationError, StoreError, UsageError

#: Name of the event-time column Feast reads from the entity rows.
EVENT_TIMESTAMP = "event_timestamp"
#: A column that keeps each entity row's place through Feast's join (which may reorder rows).
_ROW = "__evertrain_row__"
WORKER = Path(__file__).with_name("feast_worker.py")
#: Seconds one point-in-time join may take before it counts as an infrastructure failure.
WORKER_TIMEOUT = 1800.0


def feature_names(features: list[str]) -> list[str]:
    """The column of each Feast feature reference: ``view:feature`` gives ``feature``."""
    return [ref.rsplit(":", 1)[-1] for ref in features]


def historical_features(
    rows: pd.DataFrame, *, repo: str, features: list[str], time_column: str, python: str | None = None
) -> pd.DataFrame:
    """``rows`` with each feature's value as of the row's time (``time_column``), in the same order.

    Rows whose entity Feast does not know, or whose feature is older than its view's ttl,
    get a missing value.
    """
    if time_column not in rows.columns:
        raise DataValidationError(
            f"feast source: the entity rows have no time column {time_column!r} (data.time_column); "
            f"their columns: {', '.join(map(str, rows.columns[:20]))}"
        )
    taken = [c for c in feature_names(features) if c in rows.columns]
    if taken:
        raise DataValidationError(
            f"feast source: the entity rows already have column(s) {', '.join(map(repr, taken))} "
            "that Feast would add (rename them, or leave them out of the entity source)"
        )
    rows = rows.reset_index(drop=True)
    entities = rows.copy()
    entities[_ROW] = range(len(entities))
    entities[EVENT_TIMESTAMP] = _utc_times(entities[time_column])
    with tempfile.TemporaryDirectory(prefix="evertrain-feast-") as tmp:
        folder = Path(tmp)
        entities.to_parquet(folder / "entities.parquet", index=False)
        request = {
            "repo": repo,
            "features": features,
            "entities": str(folder / "entities.parquet"),
            "out": str(folder / "out.parquet"),
        }
        (folder / "request.json").write_text(json.dumps(request))
        _run_worker(python or sys.executable, folder / "request.json", repo)
        joined = pd.read_parquet(folder / "out.parquet")
    joined = joined.sort_values(_ROW, kind="stable").reset_index(drop=True)
    if len(joined) != len(entities):
        raise StoreError(f"feast source: Feast answered {len(joined)} rows for {len(entities)} entity rows")
    # the rows as given (a time column named event_timestamp included), with Feast's features
    return rows.join(joined[feature_names(features)])


def _utc_times(values: pd.Series) -> pd.Series:
    """The event times as UTC timestamps, as Feast wants them: epoch seconds, timestamps or ISO text
    (naive ones are UTC, as everywhere in evertrain)."""
    try:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return pd.to_datetime(values, unit="s", utc=True)
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        sample = ", ".join(map(repr, values.dropna().astype(str).head(3)))
        raise DataValidationError(f"time column {values.name!r}: not times ({sample}, ...): {exc}") from None


def _run_worker(python: str, request: Path, repo: str) -> None:
    env = {**os.environ, "FEAST_USAGE": "False", "DO_NOT_TRACK": "1"}
    try:
        done = subprocess.run(
            [python, str(WORKER), str(request)],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            env=env,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError(
            f"feast source: no Python at {python!r} (set data.source.python to the python of an "
            "environment with feast installed)"
        ) from None
    except subprocess.TimeoutExpired:
        raise StoreError(f"feast source: Feast took over {WORKER_TIMEOUT:.0f}s on repo {repo}") from None
    if done.returncode == 0:
        return
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    why = lines[-1] if lines else f"the worker exited {done.returncode}"
    if done.returncode == 2 and why.startswith("no feast in "):
        raise UsageError(
            f"feast source: {why} (set data.source.python to the python of an environment with "
            "`pip install feast`)"
        )
    error = DataValidationError if done.returncode == 2 else StoreError
    raise error(f"feast source: Feast failed on repo {repo}: {why}")


class FeastSource(Source):
    """The rows of ``entities`` with ``features`` from the Feast repo ``repo`` as of each row's time."""

    kind = "feast"

    def __init__(
        self,
        repo: str,
        features: list[str],
        entities: Source,
        *,
        time_column: str | None,
        python: str | None = None,
        base: Path | None = None,
    ) -> None:
        self.repo = repo
        self.features = list(features)
        self.entities = entities
        self.time_column = time_column
        self.python = python
        self.base = base

    @property
    def location(self) -> str:
        """The feature repo folder (with feature_store.yaml), resolved from the project folder."""
        return in_project(self.repo, self.base)

    @property
    def uri(self) -> str:
        return f"feast:{self.location}?features={','.join(self.features)}+{self.entities.uri}"

    @property
    def interpreter(self) -> str | None:
        """The Python that runs Feast; a relative path with a folder in it is from the project folder."""
        return None if self.python is None else in_project(self.python, self.base, command=True)

    def read(self) -> pd.DataFrame:
        rows = self.entities.read()
        if self.entities.kind == "log":
            # The log holds the features as served; training reads them from the offline store as
            # of each row's time (the skew check compares the two), so the served copies go.
            rows = rows.drop(columns=feature_names(self.features), errors="ignore")
        return self.join(rows)

    def join(self, rows: pd.DataFrame, time_column: str | None = None) -> pd.DataFrame:
        """``rows`` with this source's features as of each row's time (``time_column``, by default
        the project's ``data.time_column``)."""
        column = time_column or self.time_column
        if not column:
            raise UsageError(
                "a feast source needs data.time_column: the time each entity row's features are for"
            )
        if rows.empty:
            return rows.assign(**{name: pd.Series(dtype=float) for name in feature_names(self.features)})
        return historical_features(
            rows, repo=self.location, features=self.features, time_column=column, python=self.interpreter
        )
