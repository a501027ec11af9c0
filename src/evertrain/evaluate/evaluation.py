"""``evaluate_version``: judge a registered version against the champion, store the verdict.

Challenger and champion are loaded from the registry (hash-checked bytes, safe formats)
and scored on the same rows: the holdout snapshot the challenger was registered with
(the newest slice of its training window, never trained on). The spec's gates are
checked on those scores (:mod:`evertrain.evaluate.gates`), and the report is stored
through ``lineage.record_evaluation``: linked to the version and the holdout snapshot,
and written to the audit log.

The report (``GateReport.to_dict()``)::

    {"model": str, "version": int, "champion_version": int | null, "passed": bool, "reason": str,
     "holdout": {"snapshot": str, "n_rows": int},
     "metrics": {"challenger": {metric: float | null}, "champion": {metric: float | null} | null},
     "golden": {"snapshot", "n_rows", "challenger": {...}, "champion": {...} | null} | null,
     "latency_ms_per_row": float | null, "size_bytes": int,
     "checks": [{"kind", "name", "passed", "reason", "evidence": {...}}],
     "seed": int, "run_id": str | null, "evaluated_at": float}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypedDict

import pandas as pd

from evertrain import settings
from evertrain.data.snapshots import load_snapshot, take_snapshot
from evertrain.data.sources import open_source
from evertrain.data.windows import make_window, resolve_columns
from evertrain.evaluate.gates import (
    NO_CHAMPION,
    SCORE_GATES,
    CheckDict,
    CheckResult,
    GateInputs,
    MinGain,
    check_gate,
    evaluate_gates,
)
from evertrain.evaluate.metrics import DEFAULT_METRICS, Outputs, compute_many, get_metric
from evertrain.evaluate.scoring import (
    Scored,
    importable,
    load_model,
    predict_outputs,
    score,
)
from evertrain.exceptions import NotFoundError, UsageError
from evertrain.store import Store
from evertrain.store.registry import CHAMPION


class _Current:
    def __repr__(self) -> str:
        return "CURRENT_CHAMPION"


#: Compare with whatever version holds the ``champion`` alias when the evaluation runs.
CURRENT_CHAMPION: Final = _Current()
#: The gate kinds that compare the challenger with the champion on the same holdout.
CHAMPION_GATE_KINDS = ("non_inferiority", "superiority", "auto")
NO_GATES = "no gates configured: a challenger that trained and registered is accepted"


class EvaluationReport(TypedDict):
    """The shape of ``GateReport.to_dict()``: the stored evaluation of a version (see above)."""

    model: str
    version: int
    champion_version: int | None
    passed: bool
    reason: str
    holdout: dict[str, Any]
    metrics: dict[str, Any]
    golden: dict[str, Any] | None
    latency_ms_per_row: float | None
    size_bytes: int | None
    checks: list[CheckDict]
    seed: int
    run_id: str | None
    evaluated_at: float
    timings: dict[str, float]


@dataclass
class GateReport:
    model: str
    version: int
    champion_version: int | None
    passed: bool
    reason: str
    checks: list[CheckResult]
    holdout: dict[str, Any]
    metrics: dict[str, Any]
    seed: int
    evaluated_at: float
    golden: dict[str, Any] | None = None
    latency_ms_per_row: float | None = None
    size_bytes: int | None = None
    run_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    evaluation_id: int | None = field(default=None, compare=False)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "champion_version": self.champion_version,
            "passed": self.passed,
            "reason": self.reason,
            "holdout": self.holdout,
            "metrics": self.metrics,
            "golden": self.golden,
            "latency_ms_per_row": self.latency_ms_per_row,
            "size_bytes": self.size_bytes,
            "checks": [c.to_dict() for c in self.checks],
            "seed": self.seed,
            "run_id": self.run_id,
            "evaluated_at": self.evaluated_at,
            "timings": self.timings,
        }


def _holdout(
    store: Store, spec: Any, mv: Any, project: Path | None, rows: pd.DataFrame | None = None
) -> tuple[str, pd.DataFrame]:
    """The version's holdout snapshot (``rows`` if the caller holds its table); for a version
    registered without one, a fresh holdout of the source."""
    linked = next((s["id"] for s in mv.snapshots if s["role"] == "holdout"), None)
    if linked is not None:
        return linked, load_snapshot(store, linked) if rows is None else rows
    if project is None:
        raise UsageError(
            f"model {mv.model!r} version {mv.version} has no holdout snapshot; "
            "give the project folder so one can be cut from the data source"
        )
    source = open_source(
        spec.data.source,
        base=Path(project),
        logs_url=store.logs_url or settings.logs_url(project),
        model=spec.model.name,
        target=spec.model.target,
        time_column=spec.data.time_column,
    )
    window = make_window(source.read(), spec, store.clock())
    snap = take_snapshot(store, window.holdout, sources=[source.uri], time_column=window.columns.time)
    return snap.id, window.holdout


def _golden(store: Store, mv: Any) -> tuple[str, pd.DataFrame] | None:
    linked = next((s["id"] for s in mv.snapshots if s["role"] == "golden"), None)
    return None if linked is None else (linked, load_snapshot(store, linked))


@dataclass(frozen=True)
class ChecksAhead:
    """Checks of the gates that look only at scores (:data:`~evertrain.evaluate.gates.SCORE_GATES`),
    made before the version was registered, and the inputs and rows they were made on."""

    inputs: GateInputs
    holdout: pd.DataFrame
    seed: int
    checks: dict[int, CheckResult]
    seconds: float

    def reusable(self, inputs: GateInputs, holdout: pd.DataFrame, seed: int) -> dict[int, CheckResult]:
        """The checks, by gate position, if they were made on what ``evaluate_version`` is
        about to check: the very same scores of the same champion on the same holdout rows,
        under the same seed and trigger; else none."""
        made = self.inputs
        same = (
            made.challenger is inputs.challenger
            and made.champion is inputs.champion
            and made.champion_version == inputs.champion_version
            and made.no_champion_reason == inputs.no_champion_reason
            and made.confirmed_decay == inputs.confirmed_decay
            and made.min_gain == inputs.min_gain
            and self.holdout is holdout
            and self.seed == seed
        )
        return dict(self.checks) if same else {}


def check_ahead(
    spec: Any,
    challenger: Scored,
    champion_scores: Mapping[int, Scored],
    champion_version: int | None,
    holdout: pd.DataFrame,
    trigger: str | None,
) -> ChecksAhead:
    """Check the gates that look only at scores before the version is registered.

    The training step has the challenger's scores on the holdout before its worker has
    written its model (the worker hands them over as soon as its boosting summed them): the
    step checks these gates while the worker finishes, in another process, instead of after.
    ``evaluate_version`` takes the checks (``ahead``) where they were made on exactly what
    it checks (:meth:`ChecksAhead.reusable`), and makes them again otherwise (another
    champion promoted meanwhile, say).
    """
    started = time.perf_counter()
    ready = champion_scores.get(champion_version) if champion_version is not None else None
    champion = None
    if ready is not None and ready.classes == challenger.classes and ready.outputs.n == challenger.outputs.n:
        champion = ready.outputs
    inputs = GateInputs(
        challenger=challenger.outputs,
        champion=champion,
        champion_version=champion_version,
        frame=holdout.reset_index(drop=True),
        confirmed_decay=confirmed_decay(spec, trigger),
        min_gain=min_gain(spec, trigger),
    )
    seed = spec.model.trainer.seed
    checks = {}
    if champion_version is None or champion is not None:  # else the champion is scored when judged
        checks = {
            position: check_gate(spec.gates, position, inputs, seed)
            for position, gate in enumerate(spec.gates)
            if gate.kind in SCORE_GATES
        }
    return ChecksAhead(inputs, holdout, seed, checks, time.perf_counter() - started)


def metric_names(spec: Any) -> list[str]:
    """The metrics an evaluation reports for ``spec``: the task's defaults and each gate's."""
    names = list(DEFAULT_METRICS[spec.model.task])
    names += [g.metric for g in spec.gates if hasattr(g, "metric")]
    return list(dict.fromkeys(names))


def evaluate_version(
    store: Store,
    spec: Any,
    model: str,
    version: int,
    *,
    project: Path | str | None = None,
    champion: int | _Current | None = CURRENT_CHAMPION,
    seed: int | None = None,
    actor: str | None = None,
    record: bool = True,
    run_id: str | None = None,
    challenger_scores: Scored | None = None,
    champion_scores: Mapping[int, Scored] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    holdout_rows: pd.DataFrame | None = None,
    ahead: ChecksAhead | None = None,
) -> GateReport:
    """Check the spec's gates for ``model`` ``version`` against the champion and store the report.

    ``champion`` is the version to compare with (default: the current champion alias;
    None: compare with nothing). The bootstrap seed defaults to the trainer's seed, so a
    re-evaluation gives the same intervals. ``challenger_scores`` are the version's
    scores on its holdout when the caller already has them (the training step does: the
    worker scored the registered bytes), sparing a second scoring; ``champion_scores``
    likewise holds scores of champion versions on this holdout, used when the champion
    is one of them (the training step scores the champion while the challenger trains).
    ``holdout_rows``: the table of the version's holdout snapshot, when the caller holds it
    (the training step made it), so it is not read back. ``timer`` measures prediction latency.
    ``ahead``: the score gates' checks made before the version was registered
    (:func:`check_ahead`); taken where they were made on what is checked here.
    """
    project_dir = None if project is None else Path(project)
    mv = store.registry.get_version(model, version)
    holdout_id, holdout = _holdout(store, spec, mv, project_dir, holdout_rows)
    if not len(holdout):
        raise UsageError(
            f"model {model!r} version {version}: the holdout has no rows to judge it on "
            "(training.holdout.fraction is 0?)"
        )
    columns = resolve_columns(spec, holdout)
    task, target = spec.model.task, spec.model.target
    champion_version: int | None
    if isinstance(champion, _Current):
        try:
            champion_version = store.registry.get_alias(model, CHAMPION)
        except NotFoundError:
            champion_version = None
    else:
        champion_version = champion
    no_champion = NO_CHAMPION
    if champion_version == mv.version:
        champion_version, no_champion = (
            None,
            f"version {mv.version} is the champion itself: nothing to compare",
        )
    seed = spec.model.trainer.seed if seed is None else seed
    trusted = spec.model.trusted_types
    names = metric_names(spec)
    score_started = time.perf_counter()
    with importable(str(project_dir.resolve()) if project_dir else None):
        found = _golden(store, mv)
        challenger_model = None
        if challenger_scores is None or found is not None:
            challenger_model = load_model(store, mv, trusted)
        if challenger_scores is None:
            assert challenger_model is not None
            challenger_scores = score(challenger_model, holdout, columns.features, task, target, timer=timer)
        challenger, classes = challenger_scores.outputs, challenger_scores.classes
        champion_model = champion_out = None
        ready = (champion_scores or {}).get(champion_version) if champion_version is not None else None
        if ready is not None and ready.classes == classes and ready.outputs.n == challenger.n:
            champion_out = ready.outputs
        elif champion_version is not None:
            champion_model = load_model(store, store.registry.get_version(model, champion_version), trusted)
            champion_out, _ = predict_outputs(
                champion_model, holdout, columns.features, task, target, classes
            )
        if found is not None and champion_model is None and champion_version is not None:
            champion_model = load_model(store, store.registry.get_version(model, champion_version), trusted)
        golden = None
        if found is not None and challenger_model is not None:
            golden_id, golden_rows = found
            g_out, _ = predict_outputs(challenger_model, golden_rows, columns.features, task, target, classes)
            golden = {
                "snapshot": golden_id,
                "n_rows": len(golden_rows),
                "challenger": compute_many(names, g_out),
                "champion": None,
            }
            if champion_model is not None:
                c_out, _ = predict_outputs(
                    champion_model, golden_rows, columns.features, task, target, classes
                )
                golden["champion"] = compute_many(names, c_out)
    inputs = GateInputs(
        confirmed_decay=confirmed_decay(spec, mv.trigger),
        min_gain=min_gain(spec, mv.trigger),
        challenger=challenger,
        champion=champion_out,
        champion_version=champion_version,
        frame=holdout.reset_index(drop=True),
        latency_ms_per_row=challenger_scores.ms_per_row,
        latency_later=challenger_scores.later,
        size_bytes=mv.size_bytes,
        no_champion_reason=no_champion,
    )
    gates_started = time.perf_counter()
    done = {} if ahead is None else ahead.reusable(inputs, holdout, seed)
    checks = evaluate_gates(spec.gates, inputs, seed=seed, done=done)
    latency = challenger_scores.latency()
    timings = {"score": gates_started - score_started, "gates": time.perf_counter() - gates_started}
    if done and ahead is not None:
        timings["gates_ahead"] = ahead.seconds
    passed = all(c.passed for c in checks)
    report = GateReport(
        model=model,
        version=mv.version,
        champion_version=champion_version,
        passed=passed,
        reason=_summary(checks, champion_out, no_champion),
        checks=checks,
        holdout={"snapshot": holdout_id, "n_rows": len(holdout)},
        metrics={
            "challenger": compute_many(names, challenger),
            "champion": None if champion_out is None else compute_many(names, champion_out),
        },
        seed=seed,
        evaluated_at=store.clock(),
        golden=golden,
        latency_ms_per_row=latency,
        size_bytes=mv.size_bytes,
        run_id=run_id,
        timings=timings,
    )
    if record:
        _record(store, report, actor or settings.actor(), holdout_id)
    return report


def _record(store: Store, report: GateReport, actor: str, snapshot_id: str | None) -> None:
    """Store ``report`` as an evaluation of its version (on the holdout ``snapshot_id``)."""
    report.evaluation_id = store.lineage.record_evaluation(
        report.model,
        report.version,
        passed=report.passed,
        report=report.to_dict(),
        actor=actor,
        champion_version=report.champion_version,
        snapshot_id=snapshot_id,
    )


def confirmed_decay(spec: Any, trigger: str | None) -> str | None:
    """Why the champion is known to be stale when a version was trained for ``trigger``, else None.

    Realized performance below its baseline is a decay seen in labels; a drift is one when
    the policy retrains for it only after its labels confirmed a loss (``triggers.drift.confirm``).
    Schedules, volume, more data and manual retrains say nothing about the champion.

    >>> from evertrain.spec import Spec
    >>> spec = Spec.model_validate({"model": {"name": "m", "target": "y"},
    ...     "data": {"source": {"kind": "csv", "path": "x.csv"}}})
    >>> confirmed_decay(spec, "drift"), confirmed_decay(spec, "schedule")
    ('trained for a drift whose labels confirmed a loss', None)
    """
    fired = set((trigger or "").split(","))
    if "performance" in fired:
        return "trained for realized performance below its baseline"
    if "drift" in fired and spec.triggers.drift.confirm:
        return "trained for a drift whose labels confirmed a loss"
    return None


def min_gain(spec: Any, trigger: str | None) -> MinGain | None:
    """The least improvement a champion gate wants of a version trained for ``trigger``, beyond
    being shown better; None when being shown better is enough.

    A try on more data made while the inputs drift and their labels show no loss
    (``more_data,inputs_shifted``, see ``controller.policy``) learned from rows of moved inputs
    that the champion handles within the loss a decay needs (``triggers.performance.drop``): a
    gain smaller than that loss is not worth a rollout, as the loss was not worth a retrain.
    It is in the units of the watched metric, so only a gate on that metric applies it.

    >>> from evertrain.spec import Spec
    >>> spec = Spec.model_validate({"model": {"name": "m", "target": "y"},
    ...     "data": {"source": {"kind": "csv", "path": "x.csv"}}})
    >>> gain = min_gain(spec, "more_data,inputs_shifted")
    >>> gain.metric, gain.value, min_gain(spec, "more_data")
    ('accuracy', 0.01, None)
    """
    fired = set((trigger or "").split(","))
    if "more_data" not in fired or "inputs_shifted" not in fired:
        return None
    drop = float(spec.triggers.performance.drop)
    return MinGain(
        get_metric(spec.watched_metric()).name,
        drop,
        "tried on more data while the inputs drift and their labels showed no loss of more than "
        f"{drop:g}: a smaller gain is not worth a rollout",
    )


def proven_better(report: Mapping[str, Any]) -> str | None:
    """Why the gate showed the challenger *better* than the champion on its holdout, else None.

    A passed champion check whose whole improvement interval lies above zero (at the
    gate's confidence, on the newest labelled rows) is offline evidence of the same
    quantity a canary's labels would measure. After a confirmed decay it lets the canary
    promote on its first look, as soon as serving shows no errors, instead of waiting
    for labels that may come days late (the watch after promotion still judges them).

    >>> check = {"kind": "auto", "passed": True, "evidence": {"metric": "accuracy", "challenger": 0.9,
    ...     "champion": 0.6, "improvement_interval": [0.25, 0.35], "confidence": 0.95, "n_rows": 400}}
    >>> proven_better({"passed": True, "checks": [check]})[-56:]
    'on 400 holdout rows, improvement 95% CI [+0.250, +0.350]'
    >>> proven_better({"passed": True, "checks": [{**check, "evidence": {**check["evidence"],
    ...     "improvement_interval": [-0.01, 0.1]}}]}) is None
    True

    An ``auto`` gate that passed on the challenger's probabilities (log-loss shown lower on
    the same rows, accuracy not worse) is such evidence too.
    """
    if not report.get("passed"):
        return None
    for check in report.get("checks") or []:
        ev = check.get("evidence") or {}
        interval = ev.get("improvement_interval") or [None, None]
        if check.get("kind") not in CHAMPION_GATE_KINDS or not check.get("passed") or interval[0] is None:
            continue
        if ev.get("challenger") is None or ev.get("champion") is None:
            continue
        level = float(ev.get("test_confidence") or ev.get("confidence") or 0.95)
        found = f"the gate found {ev.get('metric')} {ev['challenger']:.3f} vs the champion's "
        found += f"{ev['champion']:.3f}"
        if interval[0] > 0:
            return (
                f"{found} on {ev.get('n_rows')} holdout rows, improvement "
                f"{level * 100:.4g}% CI [{interval[0]:+.3f}, {interval[1]:+.3f}]"
            )
        seen = ev.get("by_probabilities") or {}
        low, high = seen.get("improvement_interval") or [None, None]
        if seen.get("passed") and low is not None and high is not None:
            return (
                f"{found} and {seen.get('metric')} {seen['challenger']:.3f} vs {seen['champion']:.3f} on "
                f"{ev.get('n_rows')} holdout rows, {seen.get('metric')} improvement "
                f"{level * 100:.4g}% CI [{low:+.3f}, {high:+.3f}]"
            )
    return None


def _summary(checks: list[CheckResult], champion: Outputs | None, no_champion: str) -> str:
    if not checks:
        return NO_GATES
    failed = [c.name for c in checks if not c.passed]
    if failed:
        return f"{len(failed)} of {len(checks)} gates failed: {'; '.join(failed)}"
    suffix = f" ({no_champion})" if champion is None else ""
    return f"all {len(checks)} gates passed{suffix}"


#: A challenger the gate rejected but found better (or, after a decay, not worse) than the champion
#: is judged again on its holdout pooled with the rows labelled after its training cut-off, when
#: those hold this many times the holdout's rows: one look at each. The gate's own look spends
#: one-sided (1 - confidence) / 2 of false promotions; the looks after it share as much again
#: (Bonferroni: each at one-sided (1 - confidence) / (2 x looks)), so a challenger no better than
#: the champion is promoted at most 1 - confidence of the time over all looks.
AGAIN_AT: Final = (1, 3)


def promising(report: Mapping[str, Any]) -> bool:
    """Whether a failed gate report is worth a second look: only champion gates failed, and
    each of them estimated the challenger better than the champion (on its metric, or equal
    there and better on the probabilities an ``auto`` gate also read) by at least the gain it
    wanted, if any.

    >>> ev = {"difference": 0.011, "higher_is_better": True}
    >>> promising({"passed": False, "checks": [{"kind": "auto", "passed": False, "evidence": ev}]})
    True
    >>> promising({"passed": False, "checks": [{"kind": "auto", "passed": False,
    ...     "evidence": {**ev, "difference": -0.01}}]})
    False
    >>> tie = {**ev, "difference": 0.0, "by_probabilities": {"difference": -0.02, "higher_is_better": False}}
    >>> promising({"passed": False, "checks": [{"kind": "auto", "passed": False, "evidence": tie}]})
    True

    A challenger whose estimate falls short of the least gain its gate wanted (``min_gain``) is
    not: its holdout already measured the gain, and found it too small to be worth a rollout.
    """
    if report.get("passed"):
        return False
    failed = [c for c in report.get("checks") or [] if not c.get("passed")]
    if not failed:
        return False
    for check in failed:
        ev = check.get("evidence") or {}
        difference = ev.get("difference")
        if check.get("kind") not in CHAMPION_GATE_KINDS or difference is None:
            return False
        gain = difference if ev.get("higher_is_better", True) else -difference
        if ev.get("min_gain") and gain < ev["min_gain"]["value"]:
            return False  # estimated smaller than the least gain wanted: rows will not change that
        if gain > 0:
            continue
        # a tie: the auto gate's log-loss test (gates.check_champion) may still see it better
        seen = ev.get("by_probabilities") or {}
        on_probabilities = seen.get("difference")
        if gain < 0 or on_probabilities is None:
            return False
        if (on_probabilities if seen.get("higher_is_better") else -on_probabilities) <= 0:
            return False
    return True


def judge_again(
    store: Store,
    spec: Any,
    model: str,
    version: int,
    champion_version: int,
    fresh: pd.DataFrame,
    *,
    look: int,
    actor: str,
    project: Path | str | None = None,
) -> GateReport:
    """The champion gates of ``version`` against ``champion_version`` on the version's holdout
    pooled with ``fresh`` rows (labelled after its cut-off: neither model learnt from them),
    at the stricter confidence of look ``look`` of :data:`AGAIN_AT` (see there). An ``auto`` gate
    judges superiority, even for a version trained for a decay. Recorded as an evaluation of the
    version, like the gate's. Its checks' evidence carries the look.
    """
    project_dir = None if project is None else Path(project)
    mv = store.registry.get_version(model, version)
    holdout_id, holdout = _holdout(store, spec, mv, project_dir)
    columns = resolve_columns(spec, holdout)
    task, target = spec.model.task, spec.model.target
    keep = [*columns.features, target]
    rows = pd.concat([holdout[keep], fresh[keep]], ignore_index=True)
    trusted = spec.model.trusted_types
    with importable(str(project_dir.resolve()) if project_dir else None):
        challenger_model = load_model(store, mv, trusted)
        champion_model = load_model(store, store.registry.get_version(model, champion_version), trusted)
        challenger, classes = predict_outputs(challenger_model, rows, columns.features, task, target)
        champion, _ = predict_outputs(champion_model, rows, columns.features, task, target, classes)
    # An auto gate wants the challenger shown better here, decay or not: freshness let the gate
    # pass a challenger only as good, but a kept one is no longer the freshest (a decay is
    # retrained for again after the cooldown, on newer rows).
    inputs = GateInputs(
        challenger=challenger,
        champion=champion,
        champion_version=champion_version,
        frame=rows,
        min_gain=min_gain(spec, mv.trigger),
    )
    gates = [
        g.model_copy(update={"confidence": 1 - (1 - g.confidence) / len(AGAIN_AT)})
        for g in spec.gates
        if g.kind in CHAMPION_GATE_KINDS
    ]
    seed = spec.model.trainer.seed
    checks = evaluate_gates(gates, inputs, seed=seed)
    for check in checks:
        check.evidence.update(
            {"look": look, "looks": len(AGAIN_AT), "holdout_rows": len(holdout), "fresh_rows": len(fresh)}
        )
    passed = bool(checks) and all(c.passed for c in checks)
    names = metric_names(spec)
    report = GateReport(
        model=model,
        version=mv.version,
        champion_version=champion_version,
        passed=passed,
        reason=f"look {look} of {len(AGAIN_AT)} on {len(fresh)} rows labelled after its cut-off "
        f"and its {len(holdout)} holdout rows: " + _summary(checks, champion, NO_CHAMPION),
        checks=checks,
        holdout={"snapshot": holdout_id, "n_rows": len(rows), "fresh_rows": len(fresh)},
        metrics={"challenger": compute_many(names, challenger), "champion": compute_many(names, champion)},
        seed=seed,
        evaluated_at=store.clock(),
    )
    _record(store, report, actor, holdout_id)
    return report
