"""What the page shows from the logs and artifacts, not the metadata: quality, arms, distributions.

- :func:`quality`: the champion's newest labelled rows as a confusion matrix and a
  reliability curve (classifiers) or residuals (regression);
- :func:`arms`: each arm of a rollout (champion and challenger) on the labelled rows
  of the rollout's time, with a 95% interval (Wilson for accuracy, normal for MAE),
  and the served rows per arm;
- :func:`distributions`: one cycle's reference and current distribution per feature,
  computed again by the drift report from the reference snapshot and the served rows
  of that cycle's window.

Each reads bounded data (a newest-rows limit, one cycle's window) and the results are
kept in a small cache keyed by what they depend on (:func:`logs_key`), so a page that
polls does not read the logs again until a new cycle ran or a minute passed.
"""

from __future__ import annotations

import io
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evertrain.store import Store

QUALITY_ROWS = 2000
"""The champion's newest labelled rows that the quality views use."""
CONFUSION_CLASSES = 12
RELIABILITY_BINS = 10
RESIDUAL_BINS = 24
Z95 = 1.959963984540054

_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_computing: dict[tuple[Any, ...], threading.Lock] = {}
_lock = threading.Lock()
_CACHE_SIZE = 64


def cached(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered under ``key`` (least recently used entries are dropped).

    Callers asking for the same key at once wait for one computation (clients polling
    together after a change share one rendering instead of each making their own).
    """
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        gate = _computing.setdefault(key, threading.Lock())
    with gate:
        with _lock:
            if key in _cache:
                return _cache[key]
        try:
            value = compute()
            with _lock:
                _cache[key] = value
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
        finally:
            with _lock:
                _computing.pop(key, None)
    return value


LOGS_SECONDS = 60.0
"""How long what was read from the logs is reused while no new cycle ran (labels arrive meanwhile)."""


def logs_key(*parts: Any) -> tuple[Any, ...]:
    """A cache key for evidence read from the logs: ``parts`` (the cycles' key, a rollout's state)
    and the current span of :data:`LOGS_SECONDS`. The logs move without the store's metadata
    moving, and reading them again at every change of the store (a run finished) would cost
    every poll that follows a change a read of the newest labelled rows."""
    return (*parts, int(time.monotonic() // LOGS_SECONDS))


def preload() -> None:
    """Import now what the views import lazily, so that a dashboard's first load does not wait
    for it (the command line's status, which shares the reads, never needs them)."""
    import evertrain.data.logs
    import evertrain.faces.status_extras
    import evertrain.monitor
    import evertrain.monitor.report
    import evertrain.monitor.tests
    import evertrain.rollout.state
    import evertrain.spec  # noqa: F401


def model_spec(store: Store, model: str) -> Any | None:
    """The project file the controller saved for ``model`` (None without one, or unreadable)."""
    from evertrain.exceptions import EvertrainError
    from evertrain.spec import spec_from_json

    try:
        stored = store.specs.current(model)
    except EvertrainError:
        return None
    if stored is None:
        return None
    try:
        return cached(("spec", stored.sha256), lambda: spec_from_json(stored.data))
    except EvertrainError:
        return None


def task_of(store: Store, model: str, table: pa.Table | None = None) -> str:
    """``binary``, ``multiclass`` or ``regression``: from the saved project file, else from the rows."""
    spec = model_spec(store, model)
    if spec is not None:
        return str(spec.model.task)
    if table is not None and table.num_rows and "label" in table.column_names:
        label = table["label"]
        if not (pa.types.is_floating(label.type) or pa.types.is_integer(label.type)):
            return "multiclass"
        values = np.unique(np.asarray(label.drop_null(), dtype=float))
        if np.all(values == np.round(values)) and values.size <= 20:
            return "binary" if values.size <= 2 else "multiclass"
    return "regression"


def _labelled(
    store: Store,
    model: str,
    *,
    arms: tuple[str, ...],
    since: float | None,
    until: float | None,
    versions: tuple[int, ...] | None = None,
    newest: int | None = None,
) -> pa.Table:
    from evertrain.data.logs import labelled

    if not store.logs_url:
        return pa.table({})
    # no end: every label that has arrived (a year past both clocks; the store's may be simulated)
    at = until if until is not None else max(time.time(), store.clock()) + 366 * 86400
    return labelled(store.logs_url, model, at=at, since=since, arms=arms, versions=versions, newest=newest)


def _as_classes(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    pred, label = table["prediction"], table["label"]
    numeric = all(pa.types.is_floating(c.type) or pa.types.is_integer(c.type) for c in (pred, label))
    if numeric:
        return np.asarray(label, dtype=float), np.asarray(pred, dtype=float)
    return tuple(np.asarray(pc.cast(c, pa.string()).fill_null("")) for c in (label, pred))  # type: ignore[return-value]


def _class_name(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def quality(store: Store, model: str, version: int | None, key: Any) -> dict[str, Any]:
    """The champion's newest labelled rows as confusion and calibration, or residuals; cached by ``key``."""
    return cached(("quality", model, version, key), lambda: _quality(store, model, version))


def _quality(store: Store, model: str, version: int | None) -> dict[str, Any]:
    table = _labelled(
        store,
        model,
        arms=("champion",),
        since=None,
        until=None,
        versions=None if version is None else (version,),
        newest=QUALITY_ROWS,
    )
    task = task_of(store, model, table)
    out: dict[str, Any] = {"task": task, "version": version, "n": table.num_rows}
    if not table.num_rows:
        return out
    if task == "regression":
        y = np.asarray(table["label"], dtype=float)
        p = np.asarray(table["prediction"], dtype=float)
        ok = np.isfinite(y) & np.isfinite(p)
        res = (y - p)[ok]
        if res.size:
            lo, hi = np.quantile(res, [0.005, 0.995])
            if not hi > lo:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = np.histogram(np.clip(res, lo, hi), bins=RESIDUAL_BINS, range=(lo, hi))
            out["residuals"] = {
                "edges": edges.tolist(),
                "counts": counts.tolist(),
                "mae": float(np.mean(np.abs(res))),
                "rmse": float(np.sqrt(np.mean(res**2))),
                "bias": float(np.mean(res)),
            }
        return out
    y, p = _as_classes(table)
    classes, counts = np.unique(np.concatenate([y, p]), return_counts=True)
    shown = classes[np.argsort(-counts, kind="stable")][:CONFUSION_CLASSES]
    shown = np.sort(shown)
    index = {c: i for i, c in enumerate(shown.tolist())}
    matrix = np.zeros((len(shown), len(shown)), dtype=int)
    for a, b in zip(y.tolist(), p.tolist(), strict=True):
        if a in index and b in index:
            matrix[index[a], index[b]] += 1
    out["confusion"] = {
        "classes": [_class_name(c) for c in shown.tolist()],
        "matrix": matrix.tolist(),
        "accuracy": float(np.mean(y == p)),
    }
    if task == "binary" and "score" in table.column_names and table["score"].null_count < table.num_rows:
        s = np.asarray(table["score"].fill_null(np.nan), dtype=float)
        ok = np.isfinite(s) & np.isin(y, (0.0, 1.0))
        s, yy = s[ok], y[ok].astype(float)
        bins = []
        which = np.minimum((s * RELIABILITY_BINS).astype(int), RELIABILITY_BINS - 1)
        for b in range(RELIABILITY_BINS):
            mask = which == b
            if mask.any():
                bins.append((float(s[mask].mean()), float(yy[mask].mean()), int(mask.sum())))
        if bins:
            ece = sum(n * abs(pm - om) for pm, om, n in bins) / max(sum(n for *_, n in bins), 1)
            out["calibration"] = {"bins": bins, "ece": float(ece)}
    return out


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    phat = successes / n
    denom = 1 + Z95**2 / n
    centre = (phat + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(phat * (1 - phat) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def arms(store: Store, model: str, rollout: dict[str, Any], key: Any) -> dict[str, Any]:
    """Each arm of ``rollout`` on the labelled rows of its time, with 95% intervals; cached by ``key``."""
    return cached(("arms", model, rollout.get("id"), key), lambda: _arms(store, model, rollout))


def _arms(store: Store, model: str, rollout: dict[str, Any]) -> dict[str, Any]:
    since = rollout.get("created_at")
    until = rollout.get("ended_at")
    versions = tuple(v for v in (rollout.get("baseline"), rollout.get("version")) if v is not None)
    table = _labelled(
        store, model, arms=("champion", "canary"), since=since, until=until, versions=versions or None
    )
    task = (rollout.get("plan") or {}).get("task") or task_of(store, model, table)
    out: dict[str, Any] = {"task": task, "arms": []}
    for arm, version in (("champion", rollout.get("baseline")), ("canary", rollout.get("version"))):
        if table.num_rows:
            mask = pc.equal(table["arm"], arm)
            if version is not None:
                mask = pc.and_(mask, pc.equal(table["model_version"], version))
            rows = table.filter(mask)
        else:
            rows = table
        n = rows.num_rows
        entry: dict[str, Any] = {
            "arm": arm,
            "version": version,
            "n": n,
            "value": None,
            "low": None,
            "high": None,
        }
        if n:
            if task == "regression":
                err = np.abs(
                    np.asarray(rows["label"], dtype=float) - np.asarray(rows["prediction"], dtype=float)
                )
                err = err[np.isfinite(err)]
                if err.size:
                    mean = float(err.mean())
                    half = Z95 * float(err.std(ddof=1)) / math.sqrt(err.size) if err.size > 1 else math.nan
                    entry.update(metric="MAE", value=mean, low=mean - half, high=mean + half)
            else:
                y, p = _as_classes(rows)
                hits = int(np.sum(y == p))
                low, high = wilson(hits, n)
                entry.update(metric="accuracy", value=hits / n, low=low, high=high)
        out["arms"].append(entry)
    return out


def distributions(store: Store, model: str, cycle: dict[str, Any]) -> dict[str, Any] | None:
    """Reference and current distributions per feature in ``cycle``'s window (None when unknown)."""
    mon = cycle.get("monitor") or {}
    if not mon.get("reference") or not mon.get("window") or not (mon.get("drift") or {}).get("columns"):
        return None
    return cached(
        ("dist", model, cycle.get("cycle"), mon["reference"]), lambda: _distributions(store, model, mon)
    )


def _distributions(store: Store, model: str, mon: dict[str, Any]) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    from evertrain.data.logs import PREDICTIONS, read_log
    from evertrain.exceptions import EvertrainError
    from evertrain.monitor import drift

    features = list((mon.get("drift") or {}).get("columns") or {})
    try:
        reference = pq.read_table(io.BytesIO(store.artifacts.get(mon["reference"])))
        since, until = mon["window"]
        served = read_log(store.logs_url or "", PREDICTIONS, model, since=since, until=until)
    except (EvertrainError, OSError):
        return None
    if served.num_rows and "arm" in served.column_names:
        served = served.filter(pc.not_equal(served["arm"], "shadow"))
    spec = model_spec(store, model)
    window = spec.monitoring.window_rows if spec is not None else None
    if window is not None and served.num_rows > window:
        served = served.slice(served.num_rows - window)
    features = [f for f in features if f in reference.column_names and f in served.column_names]
    if not features or not served.num_rows:
        return None
    kwargs: dict[str, Any] = {}
    if spec is not None:
        kwargs = {"correction": spec.monitoring.drift.correction, "alpha": spec.monitoring.drift.alpha}
    report = drift(reference.select(features), served.select(features), **kwargs)
    columns = []
    for c in report.sorted_columns():
        plot = dict(c.plot)
        entry: dict[str, Any] = {
            "name": c.name,
            "kind": str(c.kind),
            "drifted": bool(c.drifted),
            "effect_test": c.effect_test,
            "effect_size": c.effect_size,
            "threshold": c.threshold,
            "p_value": c.p_value_adjusted,
        }
        if "bounds" in plot:
            bounds = np.asarray(plot["bounds"], dtype=float)
            entry["labels"] = [f"{a:.3g}..{b:.3g}" for a, b in itertools.pairwise(bounds)]
            entry["edges"] = bounds.tolist()
        elif "categories" in plot:
            entry["labels"] = [str(v) for v in plot["categories"]]
        else:
            entry["labels"] = []
        entry["reference"] = [float(v) for v in np.asarray(plot.get("reference", []), dtype=float)]
        entry["current"] = [float(v) for v in np.asarray(plot.get("current", []), dtype=float)]
        columns.append(entry)
    return {"n_reference": reference.num_rows, "n_current": served.num_rows, "columns": columns}


def effect_thresholds(columns: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each column's effect-size threshold, from its method (``ks+wasserstein`` -> wasserstein's)."""
    from evertrain.exceptions import EvertrainError
    from evertrain.monitor.tests import get_test

    out: dict[str, float] = {}
    for name, col in columns.items():
        method = str(col.get("method") or "")
        effect = method.split("+")[-1] if "+" in method else method
        for kind in ("numeric", "categorical"):
            try:
                out[name] = float(get_test(effect, kind).default_threshold)
                break
            except (EvertrainError, KeyError, ValueError):
                continue
    return out
