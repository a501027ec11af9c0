"""The five steps of a cycle. Each reads its inputs from the store and the logs, returns a
JSON-able result that the loop stores, and is safe to run again after a crash.

The statistics, training, gates and rollout analysis live in their parts; the steps only
call them in order and keep the loop's own state (the policy history).
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evertrain.controller import observe
from evertrain.controller.loop import ACTOR, CycleContext, StepFn
from evertrain.controller.policy import History, Observation, decide as policy_decide, record_training_time
from evertrain.exceptions import NotFoundError
from evertrain.store import Store
from evertrain.store.registry import ModelVersion

LOG_COLUMNS = {"request_id", "ts", "model_version", "arm", "latency_ms", "prediction", "score"}


def feature_columns(ctx: CycleContext, reference: pa.Table) -> list[str]:
    spec = ctx.spec
    if spec.model.features:
        return list(spec.model.features)
    skip = {spec.model.target, spec.data.time_column, spec.data.id_column, spec.data.label_time_column}
    return [c for c in reference.column_names if c not in skip and c not in LOG_COLUMNS]


def reference_table(store: Store, mv: ModelVersion) -> tuple[pa.Table, str] | None:
    """The champion's training snapshot: what drift is measured against."""
    snap = next((s["id"] for s in mv.snapshots if s["role"] == "train"), None)
    if snap is None:
        return None
    return pq.read_table(io.BytesIO(store.artifacts.get(snap))), snap


def champion_of(ctx: CycleContext) -> ModelVersion | None:
    try:
        number = ctx.store.registry.get_alias(ctx.model, "champion")
    except NotFoundError:
        return None
    return None if number is None else ctx.store.registry.get_version(ctx.model, number)


def monitor(ctx: CycleContext) -> dict[str, Any]:
    """Drift of what was served since the last cycle, and realized performance from labels."""
    from evertrain.monitor import drift

    champion = champion_of(ctx)
    if champion is None:
        return {"status": "no champion"}
    logs = ctx.store.logs_url or ""
    spec = ctx.spec
    since = ctx.previous_at
    served = observe.read_log(logs, "predictions", ctx.model, since=since, until=ctx.at)
    if served.num_rows and "arm" in served.column_names:
        served = served.filter(pa.compute.not_equal(served["arm"], "shadow"))
    window = spec.monitoring.window_rows
    if window is not None and served.num_rows > window:
        served = served.slice(served.num_rows - window)
    out: dict[str, Any] = {"status": "ok", "champion": champion.version, "n_rows": served.num_rows,
                           "window": [since, ctx.at]}
    ref = reference_table(ctx.store, champion)
    if ref is not None and served.num_rows:
        reference, snap = ref
        features = [c for c in feature_columns(ctx, reference) if c in served.column_names]
        drift_cfg = spec.monitoring.drift
        report = drift(
            reference.select(features), served.select(features),
            correction=drift_cfg.correction, alpha=drift_cfg.alpha,
        )
        report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        out["reference"] = snap
        out["drift"] = {
            "share_drifted": report["share_drifted"],
            "drifted_columns": report["drifted_columns"],
            "dataset_drift": report["dataset_drift"],
            "columns": {
                name: {k: col.get(k) for k in ("method", "statistic", "p_value", "effect_size", "drifted")}
                for name, col in report["columns"].items()
            },
        }
        if report["dataset_drift"]:
            ctx.alerts.emit("drift", {"model": ctx.model, "cycle": ctx.cycle, **out["drift"]})
    onset = ctx.history.pending_onset
    if onset is not None:
        since_onset = observe.labelled(logs, ctx.model, at=ctx.at, since=onset, arms=("champion", "canary"))
        out["labels_after_onset"] = since_onset.num_rows
    labelled = observe.labelled(logs, ctx.model, at=ctx.at, arms=("champion",))
    if labelled.num_rows:
        labelled = labelled.filter(pa.compute.equal(labelled["model_version"], champion.version))
        if window is not None and labelled.num_rows > window:
            labelled = labelled.slice(labelled.num_rows - window)
    metric = spec.triggers.performance.metric
    out["realized"] = {
        "metric": metric,
        "value": observe.accuracy_of(labelled) if labelled.num_rows else None,
        "n_labels": labelled.num_rows,
        "baseline": champion.metrics.get(metric),
    }
    last_retrain = max(ctx.history.retrain_times) if ctx.history.retrain_times else None
    fresh = observe.read_log(logs, "feedback", ctx.model, since=last_retrain, until=ctx.at, columns=["ts"])
    out["new_labelled_rows"] = fresh.num_rows
    return out


def decide(ctx: CycleContext) -> dict[str, Any]:
    """The policy's verdict on what monitoring saw; stored whether it acts or not."""
    mon = ctx.results.get("monitor") or {}
    manual = ctx.manual
    if mon.get("status") == "no champion" and not _has_versions(ctx):
        manual = manual or "bootstrap: no model has been trained yet"
    drift = mon.get("drift") or {}
    realized = mon.get("realized") or {}
    obs = Observation(
        at=ctx.at,
        n_rows=int(mon.get("n_rows", 0)),
        share_drifted=drift.get("share_drifted"),
        drifted_columns=tuple(drift.get("drifted_columns", ())),
        metric=realized.get("value"),
        n_labels=int(realized.get("n_labels", 0)),
        baseline=realized.get("baseline"),
        new_labelled_rows=int(mon.get("new_labelled_rows", 0)),
        reference_id=mon.get("reference"),
        labels_after_onset=int(mon.get("labels_after_onset", 0)),
    )
    decision, history = policy_decide(ctx.spec, obs, ctx.history, manual=manual)
    ctx.history = history
    result = {**decision.to_dict(), "history": history.to_dict()}
    run = ctx.store.runs.start("decision", model=ctx.model, key=f"{ctx.model}/cycle/{ctx.cycle}/decision",
                               params={"cycle": ctx.cycle, "at": ctx.at})
    ctx.store.runs.finish(run.id, "succeeded", result={"cycle": ctx.cycle, **decision.to_dict()})
    ctx.alerts.emit("decision", {"model": ctx.model, "cycle": ctx.cycle, **decision.to_dict()})
    return result


def _has_versions(ctx: CycleContext) -> bool:
    try:
        return bool(ctx.store.registry.list_versions(ctx.model))
    except NotFoundError:
        return False


def _record_training(ctx: CycleContext, seconds: float) -> History:
    ctx.history = record_training_time(ctx.history, ctx.at, seconds)
    return ctx.history


STEP_FUNCTIONS: dict[str, StepFn] = {"monitor": monitor, "decide": decide}
_ = ACTOR
