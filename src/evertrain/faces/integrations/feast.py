"""Training-serving skew of a model whose features come from Feast: what was served against what
training would have read.

A feature store exists so that training and serving see the same feature values. When
they do not (the online store lags its materialization, a streaming job computes a
feature differently from the batch one, a unit changes on one side) the model is judged
on values it never learned from. This check measures it on the model's own traffic: for
each served row of the prediction log (entity keys and features as served, and the time
of the request), it asks the offline store, point in time, what the features were for
that entity then (``get_historical_features``, as the ``feast`` source does for
training), and compares the two, column by column:

- with the drift tests the monitor runs (alpha and correction of ``monitoring.drift``):
  the served values against the offline ones, as distributions;
- row by row: the share of rows whose served value differs from the offline one. Rows
  served between a feature's update and the next materialization differ for a good
  reason, so a column skews only above ``max_mismatch`` of its rows (5% by default: an
  hourly materialization of a feature updated daily leaves about 4% of the rows behind).

A column skews when either says so; any skewed column sends a ``skew`` alert to the
project's webhooks. The entity keys and the features must be columns of the prediction
log: serving logs both for a project that reads Feast (``evertrain.serve.features``),
model inputs or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from evertrain.exceptions import DataValidationError, UsageError
from evertrain.spec import Spec
from evertrain.store import Store

#: Share of rows that may differ before a column counts as skewed (see the module docstring).
DEFAULT_MAX_MISMATCH = 0.05
#: Relative tolerance of equal numbers: the Parquet round trip and float32 stores keep about 7 digits.
NUMERIC_RTOL = 1e-6


@dataclass
class SkewReport:
    """Per feature: the drift test's verdict on served vs offline, the share of rows that differ."""

    model: str
    n_rows: int
    since: float | None
    until: float
    max_mismatch: float
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def skewed_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col["skewed"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "n_rows": self.n_rows,
            "window": [self.since, self.until],
            "max_mismatch": self.max_mismatch,
            "skew": bool(self.skewed_columns),
            "skewed_columns": self.skewed_columns,
            "columns": self.columns,
        }


def mismatch_share(served: pd.Series, offline: pd.Series) -> float:
    """Share of rows whose served value is not the offline one (a missing value equals only a missing one)."""
    both_missing = served.isna().to_numpy() & offline.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(served) and pd.api.types.is_numeric_dtype(offline):
        a = served.to_numpy(dtype=float, na_value=np.nan)
        b = offline.to_numpy(dtype=float, na_value=np.nan)
        same = np.isclose(a, b, rtol=NUMERIC_RTOL, atol=0.0) | both_missing
    else:
        same = (served.astype(str).to_numpy() == offline.astype(str).to_numpy()) & ~(
            served.isna().to_numpy() ^ offline.isna().to_numpy()
        )
        same |= both_missing
    return float(1.0 - same.mean()) if len(same) else 0.0


def check_skew(
    store: Store,
    spec: Spec,
    project: Path,
    *,
    since: float | None,
    until: float,
    max_mismatch: float = DEFAULT_MAX_MISMATCH,
) -> SkewReport:
    """Compare the features served in ``(since, until]`` with the offline store's, point in time."""
    from evertrain.data.feast_source import EVENT_TIMESTAMP, FeastSource, feature_names
    from evertrain.data.logs import PREDICTIONS, read_log
    from evertrain.data.sources import open_source
    from evertrain.monitor import drift
    from evertrain.settings import logs_url
    from evertrain.store.names import SHADOW

    source = spec.data.source
    if source.kind != "feast" or not source.repo or not source.features:
        raise UsageError(
            f"evertrain feast skew needs a feast data source in evertrain.yaml, not a {source.kind} source"
        )
    if not 0.0 <= max_mismatch <= 1.0:
        raise UsageError(f"--max-mismatch must be a share between 0 and 1, got {max_mismatch}")
    model = spec.model.name
    logs = store.logs_url or logs_url(project)
    table = read_log(logs, PREDICTIONS, model, since=since, until=until)
    if table.num_rows and "arm" in table.column_names:
        table = table.filter(pa.compute.not_equal(table["arm"], SHADOW))  # never returned to a client
    report = SkewReport(model, table.num_rows, since, until, max_mismatch)
    if not table.num_rows:
        return report
    served = table.to_pandas()
    names = feature_names(source.features)
    logged = [n for n in names if n in served.columns]
    if not logged:
        raise DataValidationError(
            f"no Feast feature of data.source.features ({', '.join(names)}) is in the prediction log of "
            f"{model!r}: the model takes none of them as inputs, so none was served"
        )
    feast = open_source(source, base=project, logs_url=logs, model=model, target=spec.model.target)
    assert isinstance(feast, FeastSource)
    keys = served.drop(columns=[*logged, EVENT_TIMESTAMP], errors="ignore")
    offline = feast.join(keys, time_column="ts")  # as of the time of each request
    cfg = spec.monitoring.drift
    verdict = drift(
        offline[logged],
        served[logged],
        alpha=cfg.alpha,
        correction=cfg.correction,
        labels=("offline", "served"),
    ).to_dict()
    for name in logged:
        col = verdict["columns"].get(name, {})
        share = mismatch_share(served[name], offline[name])
        report.columns[name] = {
            "drifted": bool(col.get("drifted", False)),
            "method": col.get("method"),
            "p_value": col.get("p_value"),
            "effect_size": col.get("effect_size"),
            "mismatch_share": share,
            "missing_offline": int(offline[name].isna().sum()),
            "skewed": bool(col.get("drifted", False)) or share > max_mismatch,
        }
    return report


def alert_skew(spec: Spec, report: SkewReport) -> None:
    """Send the ``skew`` alert to the project's webhooks (waits, bounded, until it is delivered)."""
    from evertrain.controller.alerts import Alerts

    alerts = Alerts(spec.alerts.webhooks)
    alerts.emit(
        "skew",
        {
            "model": report.model,
            "skewed_columns": report.skewed_columns,
            "columns": {name: report.columns[name] for name in report.skewed_columns},
            "n_rows": report.n_rows,
        },
    )
    alerts.flush()
