"""The five steps of a cycle. Each reads its inputs from the store and the logs, returns a
JSON-able result that the loop stores, and is safe to run again after a crash.

The statistics, training, gates and rollout analysis live in their parts; the steps only
call them in order and keep the loop's own state (the policy history).
"""

from __future__ import annotations

import io
import itertools
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evertrain.controller import observe
from evertrain.controller.context import ACTOR, CycleContext, StepFn
from evertrain.controller.policy import Observation, performance_metric, record_training_time
from evertrain.controller.policy import decide as policy_decide
from evertrain.controller.results import (
    DecideResult,
    DriftSummary,
    GateStepResult,
    MonitorResult,
    RolloutStepResult,
    TrainStepResult,
)
from evertrain.data.logs import FEEDBACK, PREDICTION_COLUMNS, PREDICTIONS, count_rows, labelled, read_log
from evertrain.exceptions import NotFoundError
from evertrain.store import Store
from evertrain.store.names import CANARY, CHAMPION, SHADOW
from evertrain.store.registry import ModelVersion

LOG_COLUMNS = set(PREDICTION_COLUMNS)


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
        number = ctx.store.registry.get_alias(ctx.model, CHAMPION)
    except NotFoundError:
        return None
    return None if number is None else ctx.store.registry.get_version(ctx.model, number)


def monitor(ctx: CycleContext) -> MonitorResult:
    """Drift of what was served since the last cycle, and realized performance from labels."""
    from evertrain.monitor import drift

    champion = champion_of(ctx)
    if champion is None:
        return {"status": "no champion"}
    logs = ctx.store.logs_url or ""
    spec = ctx.spec
    since = ctx.previous_at
    served = read_log(logs, PREDICTIONS, ctx.model, since=since, until=ctx.at)
    if served.num_rows and "arm" in served.column_names:
        served = served.filter(pa.compute.not_equal(served["arm"], SHADOW))
    window = spec.monitoring.window_rows
    if window is not None and served.num_rows > window:
        served = served.slice(served.num_rows - window)
    out: MonitorResult = {
        "status": "ok",
        "champion": champion.version,
        "n_rows": served.num_rows,
        "window": [since, ctx.at],
    }
    ref = reference_table(ctx.store, champion)
    if ref is not None and served.num_rows:
        reference, snap = ref
        features = [c for c in feature_columns(ctx, reference) if c in served.column_names]
        texts = spec.model.text_features(features)  # compared as text below, not as categories
        features = [c for c in features if c not in texts]
        drift_cfg = spec.monitoring.drift
        report: dict[str, Any] = (
            drift(
                reference.select(features),
                served.select(features),
                correction=drift_cfg.correction,
                alpha=drift_cfg.alpha,
            ).to_dict()
            if features
            else {"share_drifted": 0.0, "drifted_columns": [], "dataset_drift": False, "columns": {}}
        )
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
        if texts:
            out["drift"], out["text_drift"] = _text_drift(
                out["drift"], reference, served, texts, drift_cfg.alpha
            )
        if out["drift"]["dataset_drift"]:
            ctx.alerts.emit("drift", {"model": ctx.model, "cycle": ctx.cycle, **out["drift"]})
    metric, _ = performance_metric(spec)
    onset = ctx.history.pending_onset
    if onset is not None:
        since_onset = labelled(logs, ctx.model, at=ctx.at, since=onset, arms=(CHAMPION, CANARY))
        out["labels_after_onset"] = since_onset.num_rows
        if since_onset.num_rows:
            # what the drift did to the champion: its own labelled rows since the drift began
            own = since_onset.filter(pa.compute.equal(since_onset["arm"], CHAMPION))
            own = own.filter(pa.compute.equal(own["model_version"], champion.version))
            out["metric_after_onset"] = observe.realized_metric(own, metric, spec.model.task)
    # Only the newest window of the champion's labelled rows: read newest parts first, not history.
    known = labelled(
        logs, ctx.model, at=ctx.at, arms=(CHAMPION,), versions=(champion.version,), newest=window
    )
    if known.num_rows:
        known = known.filter(pa.compute.equal(known["model_version"], champion.version))
        if window is not None and known.num_rows > window:
            known = known.slice(known.num_rows - window)
    parts = spec.triggers.performance.consecutive
    out["realized"] = {
        "metric": metric,
        "value": observe.realized_metric(known, metric, spec.model.task),
        # the same rows in consecutive parts, oldest first: a decay must show in each
        "parts": _metric_parts(known, metric, spec.model.task, parts),
        "n_labels": known.num_rows,
        "baseline": champion.metrics.get(metric),
        # the holdout rows behind the baseline: how sure it is (the decay test weighs both)
        "baseline_rows": (champion.params.get("window") or {}).get("n_holdout"),
        "first_served": _first_served(ctx, champion, metric),
        # event time of the oldest row behind the value: a retrain for decay learns from here on
        "since": float(pa.compute.min(known["ts"]).as_py()) if known.num_rows else None,
    }
    est = spec.triggers.estimated_performance
    if est.enabled and served.num_rows and known.num_rows:
        out["estimated"] = _estimate(served, known, est.metric)
    last_retrain = max(ctx.history.retrain_times) if ctx.history.retrain_times else None
    out["new_labelled_rows"] = count_rows(logs, FEEDBACK, ctx.model, since=last_retrain, until=ctx.at)
    out["champion_data"] = _champion_data(ctx, champion)
    out["rollout"] = _rollout_in_progress(ctx)
    return out


def _first_served(ctx: CycleContext, champion: ModelVersion, metric: str) -> dict[str, Any] | None:
    """The champion's ``metric`` on its first ``triggers.performance.min_labels`` labelled rows in
    service (as canary or champion), once that many have arrived; None before.

    A fixed set of rows, so it is read once: the policy's history keeps it for this version.
    Only read for a champion whose holdout had fewer rows (the policy pools it with that
    holdout, see :func:`evertrain.controller.policy.reference`; a larger one is used alone)."""
    kept = ctx.history.first_served
    if kept is not None and kept.get("version") == champion.version:
        return {"value": kept["value"], "rows": kept["rows"]}
    need = ctx.spec.triggers.performance.min_labels
    holdout = (champion.params.get("window") or {}).get("n_holdout")
    if holdout is None or int(holdout) >= need:
        return None
    cutoff = champion.params.get("cutoff")
    rows = labelled(
        ctx.store.logs_url or "",
        ctx.model,
        at=ctx.at,
        since=None if cutoff is None else float(cutoff),
        arms=(CHAMPION, CANARY),
        versions=(champion.version,),
    )
    if rows.num_rows < need:
        return None
    # rows served at the same time are taken in request order, so the set never depends on the read order
    keys = [(c, "ascending") for c in ("ts", "request_id") if c in rows.column_names]
    first = rows.take(pa.compute.sort_indices(rows, sort_keys=keys)).slice(0, need)
    value = observe.realized_metric(first, metric, ctx.spec.model.task)
    return None if value is None else {"value": value, "rows": need}


def _champion_data(ctx: CycleContext, champion: ModelVersion) -> dict[str, Any] | None:
    """The window the champion's training drew on, and the labelled rows that arrived after its
    cut-off; None for a version registered without a training window."""
    window = champion.params.get("window") or {}
    cutoff = champion.params.get("cutoff")
    if cutoff is None or window.get("n_window") is None:
        return None
    new = count_rows(ctx.store.logs_url or "", FEEDBACK, ctx.model, since=float(cutoff), until=ctx.at)
    return {"rows": int(window["n_window"]), "cutoff": float(cutoff), "new_labelled_rows": new}


def _text_drift(
    summary: DriftSummary, reference: pa.Table, served: pa.Table, columns: list[str], alpha: float
) -> tuple[DriftSummary, dict[str, Any]]:
    """The text columns' drift (:mod:`evertrain.monitor.text`) counted into the drift summary,
    so the policy's drift trigger weighs them as any column; and their evidence."""
    from evertrain.monitor.text import text_drift, with_text_columns

    reports = [
        text_drift(reference[c].to_pylist(), served[c].to_pylist(), column=c, alpha=alpha) for c in columns
    ]
    merged = cast(DriftSummary, with_text_columns(cast(dict[str, Any], summary), reports))
    return merged, {r.column: r.to_dict() for r in reports}


def _metric_parts(rows: pa.Table, metric: str, task: str, parts: int) -> list[float | None]:
    """The realized metric on ``parts`` consecutive, equal-count parts of ``rows`` by event time."""
    if parts <= 1 or rows.num_rows < parts:
        return []
    ordered = rows.take(pa.compute.sort_indices(rows, sort_keys=[("ts", "ascending")]))
    bounds = np.linspace(0, ordered.num_rows, parts + 1).astype(int)
    return [
        observe.realized_metric(ordered.slice(a, b - a), metric, task)
        for a, b in itertools.pairwise(bounds.tolist())
    ]


MIN_CALIBRATION_ROWS = 200  # labelled rows below which a calibration is too coarse to trust


def _estimate(served: pa.Table, labelled: pa.Table, metric: str) -> dict[str, Any] | None:
    """Label-free estimate of the served window, calibrated on the newest labelled rows.

    The calibration rows are the champion's own labelled traffic, so the baseline is its
    realized metric there, and a drop means the served window looks worse than the
    labelled past did, before its labels arrive.
    """
    from evertrain.monitor.estimate import PerformanceEstimator, roc_auc

    if "score" not in served.column_names or "score" not in labelled.column_names:
        return None
    ref = labelled.filter(pa.compute.is_valid(labelled["score"]))
    cur = served.filter(pa.compute.is_valid(served["score"]))
    if ref.num_rows < MIN_CALIBRATION_ROWS or cur.num_rows == 0:
        return None
    y = np.asarray(ref["label"].to_pylist(), dtype=float)
    score = np.asarray(ref["score"].to_pylist(), dtype=float)
    if len(np.unique(y)) < 2:
        return None
    estimator = PerformanceEstimator().fit(y, score)
    estimate = estimator.estimate(np.asarray(cur["score"].to_pylist(), dtype=float))[metric]
    if metric == "roc_auc":
        baseline = roc_auc(y, score)
    else:
        baseline = float(np.mean((score >= estimator.threshold) == (y == 1)))
    return {**estimate.to_dict(), "baseline": float(baseline), "n_reference": ref.num_rows}


def _rollout_in_progress(ctx: CycleContext) -> int | None:
    from evertrain.rollout import get_active

    active = get_active(ctx.store, ctx.model)
    return active.version if active is not None and active.phase in (SHADOW, CANARY) else None


def decide(ctx: CycleContext) -> DecideResult:
    """The policy's verdict on what monitoring saw; stored whether it acts or not."""
    mon = ctx.results.get("monitor") or {}
    manual = ctx.manual
    if mon.get("status") == "no champion":
        manual = manual or (
            "bootstrap: no champion yet (versions exist but none was promoted)"
            if _has_versions(ctx)
            else "bootstrap: no model has been trained yet"
        )
    drift = mon.get("drift") or {}
    realized = mon.get("realized") or {}
    estimated = mon.get("estimated") or {}
    champion_data = mon.get("champion_data") or {}
    obs = Observation(
        at=ctx.at,
        n_rows=int(mon.get("n_rows", 0)),
        share_drifted=drift.get("share_drifted"),
        drifted_columns=tuple(drift.get("drifted_columns", ())),
        metric=realized.get("value"),
        metric_parts=tuple(realized.get("parts") or ()),
        n_labels=int(realized.get("n_labels", 0)),
        baseline=realized.get("baseline"),
        baseline_rows=realized.get("baseline_rows"),
        new_labelled_rows=int(mon.get("new_labelled_rows", 0)),
        estimated=estimated.get("value"),
        estimated_baseline=estimated.get("baseline"),
        reference_id=mon.get("reference"),
        labels_after_onset=int(mon.get("labels_after_onset", 0)),
        metric_after_onset=mon.get("metric_after_onset"),
        realized_since=realized.get("since"),
        window_start=(mon.get("window") or [None])[0],
        rollout_version=mon.get("rollout"),
        champion_version=mon.get("champion"),
        champion_rows=champion_data.get("rows"),
        first_served=(realized.get("first_served") or {}).get("value"),
        first_served_rows=int((realized.get("first_served") or {}).get("rows") or 0),
        labels_since_champion=int(champion_data.get("new_labelled_rows") or 0),
    )
    decision, history = policy_decide(ctx.spec, obs, ctx.history, manual=manual)
    ctx.history = history
    result = cast(DecideResult, {**decision.to_dict(), "history": history.to_dict()})
    run = ctx.store.runs.start(
        "decision",
        model=ctx.model,
        key=f"{ctx.model}/cycle/{ctx.cycle}/decision",
        params={"cycle": ctx.cycle, "at": ctx.at},
    )
    ctx.store.runs.finish(run.id, "succeeded", result={"cycle": ctx.cycle, **decision.to_dict()})
    ctx.alerts.emit("decision", {"model": ctx.model, "cycle": ctx.cycle, **decision.to_dict()})
    return result


def _has_versions(ctx: CycleContext) -> bool:
    try:
        return bool(ctx.store.registry.list_versions(ctx.model))
    except NotFoundError:
        return False


def train(ctx: CycleContext) -> TrainStepResult:
    """Train on a fresh window when the decision says so; registers one version per cycle at most."""
    from evertrain.train.pipeline import train_model

    decision = ctx.results.get("decide") or {}
    if decision.get("action") != "retrain":
        return {"status": "skipped"}
    reasons = decision.get("reasons", [])
    since = decision.get("since")
    # The configured window is kept; when a drift or a decay began is a hint: the training
    # judges on the rows after it and chooses among candidate training sets by them.
    result = train_model(
        ctx.store,
        ctx.spec,
        ctx.project,
        reason="; ".join(reasons),
        trigger=",".join(decision.get("triggers", [])) or "manual",
        key=f"{ctx.model}/cycle/{ctx.cycle}/training",
        evaluate=False,
        actor=ACTOR,
        change_at=None if since is None else float(since),
    )
    seconds = float(result.metrics.get("fit_seconds") or result.timings.get("total") or 0.0)
    history = record_training_time(ctx.history, ctx.at, seconds)
    ctx.history = history
    return {
        "status": "trained",
        "version": result.version,
        "run": result.run_id,
        "seconds": seconds,
        "metrics": result.metrics,
        "history": history.to_dict(),
    }


def gate(ctx: CycleContext) -> GateStepResult:
    """Judge the new version against the champion; promote a first version, canary a passing one."""
    from evertrain.evaluate.evaluation import evaluate_version

    trained = ctx.results.get("train") or {}
    if trained.get("status") != "trained" or trained.get("version") is None:
        return _second_look(ctx)
    version = int(trained["version"])
    existing = ctx.store.lineage.evaluations(ctx.model, version)
    report = (
        existing[-1]["report"]
        if existing
        else evaluate_version(
            ctx.store,
            ctx.spec,
            ctx.model,
            version,
            project=ctx.project,
            actor=ACTOR,
            run_id=trained.get("run"),
        ).to_dict()
    )
    passed = bool(report["passed"])
    out: GateStepResult = {
        "status": "passed" if passed else "failed",
        "version": version,
        "champion": report.get("champion_version"),
        "reason": report.get("reason"),
        "checks": report.get("checks", []),
        "promoted": False,
        "rollout": None,
    }
    # a newer challenger supersedes one kept for a second look
    ctx.history.second_look = _kept(ctx, version, report) if not passed else None
    out["history"] = ctx.history.to_dict()
    if not passed:
        ctx.alerts.emit(
            "gate_failed", {"model": ctx.model, "version": version, "reason": report.get("reason")}
        )
        return out
    champion = ctx.store.registry.get_alias(ctx.model, CHAMPION)
    if champion is None:
        ctx.store.registry.promote(
            ctx.model,
            version,
            actor=ACTOR,
            expected=None,
            reason="first version: no champion to compare with",
        )
        out["promoted"] = True
        ctx.alerts.emit("promotion", {"model": ctx.model, "version": version, "reasons": ["first version"]})
        return out
    if champion == version:
        out["promoted"] = True  # promoted before a crash: nothing more to do
        return out
    out["rollout"] = _start_rollout(ctx, version, report)
    return out


def _start_rollout(ctx: CycleContext, version: int, report: dict[str, Any]) -> str:
    """Start the normal rollout of ``version``, which passed the gates of ``report``; its phase.
    One begun before a crash (the step run again) goes on: it is not begun twice."""
    from evertrain.evaluate.evaluation import confirmed_decay, proven_better
    from evertrain.rollout import get_active, start_rollout

    active = get_active(ctx.store, ctx.model)
    if active is not None and active.version == version:
        return active.phase
    trigger = ctx.store.registry.get_version(ctx.model, version).trigger
    decay = confirmed_decay(ctx.spec, trigger)
    more_data = "tried on more data" if decay is None and "more_data" in (trigger or "").split(",") else None
    started = start_rollout(
        ctx.store,
        ctx.model,
        version,
        actor=ACTOR,
        rollout_spec=ctx.spec.rollout,
        task=ctx.spec.model.task,
        reason=f"passed its gates: {report.get('reason')}",
        now=ctx.at,
        decay=decay,
        proven=proven_better(report) if decay is not None or more_data is not None else None,
        more_data=more_data,
    )
    return started.phase


def _kept(ctx: CycleContext, version: int, report: dict[str, Any]) -> dict[str, Any] | None:
    """What to keep of a challenger the gate rejected, to judge it again on the rows labelled after
    its cut-off (:func:`_second_look`): one whose only failed gates compared it with the champion
    and found it better, with a holdout; None for any other."""
    from evertrain.evaluate.evaluation import promising

    champion = report.get("champion_version")
    mv = ctx.store.registry.get_version(ctx.model, version)
    holdout = (mv.params.get("window") or {}).get("n_holdout")
    cutoff = mv.params.get("cutoff")
    if champion is None or not holdout or cutoff is None or not promising(report):
        return None
    return {
        "version": version,
        "champion": int(champion),
        "cutoff": float(cutoff),
        "holdout_rows": int(holdout),
        "looks": 0,
    }


def _second_look(ctx: CycleContext) -> GateStepResult:
    """Judge again a challenger kept by the gate (see :func:`_kept`), on its holdout pooled with
    the rows labelled after its cut-off, once those hold ``AGAIN_AT[look]`` times its holdout's
    rows; at a stricter confidence (:data:`evertrain.evaluate.evaluation.AGAIN_AT`). Passed, it
    goes through the normal rollout; shown no better, after its last look, or when the champion
    changed, it is dropped. A newer challenger replaces it (:func:`gate`). Run again after a
    crash, it reads back a look already recorded and goes on with a rollout already begun."""
    from evertrain.evaluate.evaluation import AGAIN_AT, judge_again, promising

    pending = ctx.history.second_look
    if pending is None:
        return {"status": "skipped"}
    version, champion = int(pending["version"]), int(pending["champion"])
    out: GateStepResult = {"status": "skipped", "version": version, "champion": champion}
    now = ctx.store.registry.get_alias(ctx.model, CHAMPION)
    if now != champion:
        return _drop(ctx, out, f"the champion is v{now} now, not v{champion}")
    in_progress = _rollout_in_progress(ctx)
    if in_progress is not None and in_progress != version:
        return out  # a version is in shadow or canary: judged when it is done
    look = int(pending["looks"]) + 1
    need = int(pending["holdout_rows"]) * AGAIN_AT[look - 1]
    rows = labelled(
        ctx.store.logs_url or "",
        ctx.model,
        at=ctx.at,
        since=float(pending["cutoff"]),
        arms=(CHAMPION, CANARY),
    )
    out["second_look"] = {"look": look, "rows": rows.num_rows, "needed": need}
    if rows.num_rows < need:
        return out
    report = _judged(ctx, version, champion, look)  # judged before a crash: not judged twice
    if report is None:
        fresh = rows.to_pandas()
        fresh[ctx.spec.model.target] = fresh["label"]
        report = judge_again(
            ctx.store,
            ctx.spec,
            ctx.model,
            version,
            champion,
            fresh,
            look=look,
            actor=ACTOR,
            project=ctx.project,
        ).to_dict()
    out.update({"reason": report.get("reason"), "checks": report.get("checks", []), "promoted": False})
    if report["passed"]:
        ctx.history.second_look = None
        out.update({"status": "passed", "rollout": _start_rollout(ctx, version, report)})
        out["history"] = ctx.history.to_dict()
        return out
    if look >= len(AGAIN_AT) or not promising(report):
        return _drop(ctx, out, f"look {look} of {len(AGAIN_AT)} did not show it better")
    ctx.history.second_look = {**pending, "looks": look}
    out["history"] = ctx.history.to_dict()
    return out


def _judged(ctx: CycleContext, version: int, champion: int, look: int) -> dict[str, Any] | None:
    """The report of look ``look`` at ``version`` against ``champion`` if one was recorded, else None."""
    for evaluation in reversed(ctx.store.lineage.evaluations(ctx.model, version)):
        report: dict[str, Any] = evaluation["report"]
        checks = report.get("checks") or []
        if (
            report.get("champion_version") == champion
            and checks
            and all((c.get("evidence") or {}).get("look") == look for c in checks)
        ):
            return report
    return None


def _drop(ctx: CycleContext, out: GateStepResult, why: str) -> GateStepResult:
    ctx.history.second_look = None
    out["second_look"] = {**(out.get("second_look") or {}), "dropped": why}
    out["history"] = ctx.history.to_dict()
    return out


def rollout(ctx: CycleContext) -> RolloutStepResult:
    """One tick of the rollout in progress, if any: hold, advance, promote or roll back."""
    from evertrain.rollout import advance, get_active

    if get_active(ctx.store, ctx.model) is None:
        return {"action": "idle"}
    decision = advance(ctx.store, ctx.model, actor=ACTOR, now=ctx.at)
    state = decision.rollout
    out: RolloutStepResult = {
        "action": decision.action,
        "reasons": decision.reasons,
        "version": None if state is None else state.version,
        "phase": None if state is None else state.phase,
        "share": None if state is None else state.share,
        "outcome": None,
    }
    if decision.action == "promote":
        out["outcome"] = "promoted"
        ctx.alerts.emit(
            "promotion", {"model": ctx.model, "version": out["version"], "reasons": decision.reasons}
        )
    elif decision.action == "rollback":
        out["outcome"] = "rolled_back"
        ctx.alerts.emit(
            "rollback", {"model": ctx.model, "version": out["version"], "reasons": decision.reasons}
        )
    return out


# The loop handles every result as a plain JSON dict; the TypedDicts above are its shapes.
STEP_FUNCTIONS = cast(
    dict[str, StepFn],
    {"monitor": monitor, "decide": decide, "train": train, "gate": gate, "rollout": rollout},
)
