"""``train_model``: the training step of the loop, from data source to a judged version.

1. **Claim the run.** A training is a run of kind ``train``, held by a lease while it
   works. With a ``key`` (the controller passes one per cycle step), a restarted step
   finds its own run: done -> its result; abandoned -> resumed; failed -> a new
   attempt ``key#2``, ``key#3``... Without a key, an abandoned training run of the model
   (its holder died) is resumed before a new one is started.
2. **Window** the source at the run's cut-off (recorded when the run started, so a
   resumed run sees exactly the same rows) and **snapshot** train, valid, holdout (and
   the golden set) into the artifact store.
3. **Train** through the executor, inside the daily budget and a concurrency slot, with
   an optional sweep; a crash or timeout fails the run with its error and log kept.
4. **Register** the model with its snapshots, parent, trigger, code version and the
   run's id, which makes registering idempotent: a step killed after registering and
   run again finds its version instead of making a second.
5. **Evaluate** the gates (:func:`evertrain.evaluate.evaluation.evaluate_version`) and
   finish the run as ``accepted`` or ``rejected``. Nothing here promotes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evertrain import settings
from evertrain._background import ahead
from evertrain.data.windows import Window
from evertrain.evaluate.evaluation import ChecksAhead, check_ahead, evaluate_version
from evertrain.evaluate.scoring import Scored
from evertrain.exceptions import EvertrainError, IntegrityError, NotFoundError, TrainingFailed
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.artifacts import sha256_bytes
from evertrain.store.bases import store_base
from evertrain.store.registry import CHAMPION
from evertrain.store.runs import Run
from evertrain.train.budget import TrainingBudget, heartbeat
from evertrain.train.executors import Executor, Outcome, get_executor
from evertrain.train.overlap import ChampionScorer
from evertrain.train.progress import Listener
from evertrain.train.provenance import code_version
from evertrain.train.stages import RUN_LEASE_PREFIX, TrainingStep
from evertrain.train.worker import OUT_DIR, SCORES_CLASSES_FILE, SCORES_FILE


@dataclass
class TrainResult:
    """What one training step gave: the run, the version it registered and the gate verdict."""

    model: str
    run_id: str
    version: int | None
    outcome: str
    resumed: bool = False
    snapshots: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return None if self.report is None else bool(self.report["passed"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, passed=self.passed)


def _spec_digest(spec: Spec) -> str:
    # Canonical JSON rather than the YAML text: the same content, a tenth of the time.
    text = json.dumps(spec.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _champion(store: Store, name: str) -> int | None:
    try:
        return store.registry.get_alias(name, CHAMPION)
    except NotFoundError:
        return None


def _finish_failed(step: TrainingStep, run: Run, outcome: Outcome, extra: dict[str, Any]) -> None:
    log_digest = step.store.artifacts.put(outcome.log.encode()) if outcome.log else None
    step.store.runs.finish(
        run.id,
        "failed",
        metrics={"train_seconds": outcome.seconds},
        result=dict(extra, log_tail=outcome.log_tail, log_artifact=log_digest, timings=step.timings),
        error=outcome.error,
    )


@dataclass
class _Fitted:
    """A training that finished with a model whose bytes hash to what its worker reported."""

    window: Window
    outcome: Outcome
    sweep_info: dict[str, Any] | None
    snapshots: dict[str, str]
    extra: dict[str, Any]
    champion_scores: dict[int, Scored]
    #: The challenger's scores on the holdout, as the worker handed them over.
    scores: Scored | None = None
    #: The score gates' checks, made while the worker finished.
    ahead: ChecksAhead | None = None


@dataclass
class _Trained:
    """A registered version and what judging and recording it need."""

    version: int
    snapshots: dict[str, str]
    metrics: dict[str, Any]
    extra: dict[str, Any]
    window: Window | None = None
    scores: Scored | None = None
    champion_scores: dict[int, Scored] = field(default_factory=dict)
    #: Registered by this call, so judged by none yet (else: registered before a stop).
    registered_now: bool = True
    ahead: ChecksAhead | None = None


def train_model(
    store: Store,
    spec: Spec,
    project: Path | str,
    *,
    reason: str | None = None,
    trigger: str = "manual",
    key: str | None = None,
    executor: Executor | str | None = None,
    evaluate: bool = True,
    actor: str | None = None,
    change_at: float | None = None,
    progress: Listener | None = None,
) -> TrainResult:
    """Train ``spec``'s model on a fresh window, register it, and judge it (see the module doc).

    ``key`` makes the step idempotent across restarts; ``executor`` overrides
    ``training.executor``; ``evaluate=False`` stops after registering (outcome
    ``registered``). Raises :class:`TrainingFailed` when the training crashed or timed
    out (the failed run keeps the error and the log) and :class:`BudgetExhausted` when
    the budget or the concurrency cap says no.

    ``change_at``: when the data changed (the policy's hint after a drift or a decay). The
    configured window is kept; the holdout and valid part are cut from the rows after the
    change, and the training chooses among candidate training sets
    (:mod:`evertrain.train.candidates`) by those valid rows. The hint is a run parameter,
    so a resumed run cuts the same rows.

    ``progress`` is told the stage the training is in and, while the model is fitted, the
    trainer's own reports (boosting rounds, LoRA steps), as
    :class:`~evertrain.train.progress.Progress` records.
    """
    total_started = time.perf_counter()
    project = Path(project).resolve()
    if isinstance(executor, str) or executor is None:
        executor = get_executor(executor or spec.training.executor)
    step = TrainingStep(store, spec, project, executor, actor or settings.actor(), progress)
    step.prefetch()
    name = spec.model.name
    params = _run_params(store, spec, project, executor, reason=reason, trigger=trigger)
    params["change_at"] = change_at
    run, resumed = step.claim(key, params)
    if run.status == "succeeded":
        return _result_of(run, resumed=True)
    run_lease = RUN_LEASE_PREFIX + run.id
    params = run.params  # a resumed run keeps its own cut-off, parent and trigger
    job_dir = settings.state_dir(project) / "work" / run.id
    fitted: _Fitted | None = None
    try:
        with heartbeat(step.leases, [run_lease], step.holder):
            version = store.registry.version_of_run(name, run.id)
            if version is None:
                fitted = _fit(step, run, params, job_dir, evaluate=evaluate, resumed=resumed)
                trained = _register_fitted(step, run, params, fitted)
            else:
                trained = _registered_before(step, run, version)
            report = _judge(step, run, trained) if evaluate else None
            outcome_name = _finish(step, run, trained, report, total_started)
    except TrainingFailed:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    except EvertrainError as exc:
        # Refused or bad input: this attempt is over and says why; a kill instead leaves it resumable.
        store.runs.finish(run.id, "failed", result={"timings": step.timings}, error=exc.message)
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    finally:
        step.leases.release(run_lease, step.holder)
        if fitted is not None:
            # The worker handed everything over and goes on exiting; the step does not wait
            # for the kernel to take down its memory (the next warm worker starts after it).
            fitted.outcome.let_go()
    _clear_later(job_dir)
    return TrainResult(
        name,
        run.id,
        trained.version,
        outcome_name,
        resumed,
        trained.snapshots,
        trained.metrics,
        report,
        step.timings,
    )


#: Where a finished step's job folder goes to be removed (see :func:`_clear_later`).
CLEARED_DIR = "cleared"


def _clear_later(job_dir: Path) -> None:
    """Remove a finished step's job folder (its data parts: tens of megabytes for a large
    window, a few milliseconds to delete) after the step returns: it is moved out of the
    way at once and deleted by a thread the interpreter waits for at exit. Folders that a
    process killed meanwhile left there are deleted with it."""
    cleared = job_dir.parent.parent / CLEARED_DIR
    try:
        cleared.mkdir(exist_ok=True)
        os.replace(job_dir, cleared / job_dir.name)
    except OSError:  # gone already, or not movable: removed here
        shutil.rmtree(job_dir, ignore_errors=True)
        return

    def clear() -> None:
        for leftover in cleared.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    threading.Thread(target=clear, name="evertrain-clear-job", daemon=False).start()


def _run_params(
    store: Store, spec: Spec, project: Path, executor: Executor, *, reason: str | None, trigger: str
) -> dict[str, Any]:
    """What a new training run records when it starts: its cut-off, parent, trigger and provenance."""
    return {
        "cutoff": store.clock(),
        "trigger": trigger,
        "reason": reason,
        "parent": _champion(store, spec.model.name),
        "executor": executor.name,
        "seed": spec.model.trainer.seed,
        "trainer": spec.model.trainer.model_dump(mode="json"),
        "window": spec.training.window.model_dump(mode="json"),
        "holdout": spec.training.holdout.model_dump(mode="json"),
        "spec_sha256": _spec_digest(spec),
        "code_version": code_version(project),
    }


def _fit(
    step: TrainingStep, run: Run, params: dict[str, Any], job_dir: Path, *, evaluate: bool, resumed: bool
) -> _Fitted:
    """Window and snapshot the data, then train through the executor inside the budget.

    The champion is scored on the new holdout meanwhile when the gates will want it.
    A failed training finishes the run as failed and raises :class:`TrainingFailed`.
    """
    store, spec, name = step.store, step.spec, step.name
    budget = TrainingBudget(store, name, spec.training.budget)
    seconds_left = budget.check()
    trainer = spec.model.trainer
    change_at = params.get("change_at")
    with (
        step.executor.prepared(trainer.kind == "lightgbm" and not trainer.warm_start),
        budget.slot(step.holder),
    ):
        # The slot and the champion's version are taken while the source is still being read.
        current = _champion(store, name)
        window, source_uri, _golden = step.window(
            float(params["cutoff"]), None if change_at is None else float(change_at)
        )
        champion = ChampionScorer(store, spec, step.project, current, window, evaluate)
        snapshots = step.snapshots
        assert snapshots is not None

        def beside() -> None:
            # Once the job is in the executor's hands: started before, the threads' Python work
            # (data frames, the store's records) took the interpreter lock from the step's own
            # way to the fit, which it then reached about 10 ms later.
            snapshots.start()
            champion.start()

        early: dict[str, Any] = {}

        def scores_ready() -> None:
            # The worker summed the challenger's holdout scores and goes on writing and checking
            # its model: the gates that need only scores are checked meanwhile, in this process
            # (and taken only if the scores it hands over in the end are these).
            early["scores"] = _early_scores(job_dir)
            if evaluate:
                early["ahead"] = check_ahead(
                    spec,
                    early["scores"][1],
                    champion.wait(),
                    champion.champion,
                    window.holdout,
                    params.get("trigger"),
                )

        try:
            with champion:
                step.write_job(job_dir, window, params.get("parent"))
                outcome, sweep_info = step.execute(run, job_dir, seconds_left, beside, scores_ready)
        finally:
            waited = time.perf_counter()
            snaps = snapshots.wait()
            step.timed("snapshot", waited)
    extra = {"snapshots": snaps, "window": window.info, "source": source_uri, "resumed": resumed}
    if champion.predicted_rows is not None:
        # Holdout rows the champion predicted here; the rest it had predicted for the last holdout.
        extra["champion_rows_predicted"] = champion.predicted_rows
    if sweep_info is not None:
        extra["sweep"] = sweep_info
    if not outcome.ok or outcome.model is None:
        _finish_failed(step, run, outcome, extra)
        raise TrainingFailed(f"training of model {name!r} failed (run {run.id}): {outcome.error}")
    if sha256_bytes(outcome.model) != outcome.result.get("model_sha256"):
        raise IntegrityError(f"run {run.id}: the model bytes do not hash to what the worker reported")
    scores = _challenger_scores(outcome, early.get("scores"))
    # The checks made ahead are taken only where made on these very scores (see ChecksAhead).
    return _Fitted(window, outcome, sweep_info, snaps, extra, champion.scores, scores, early.get("ahead"))


def _early_scores(job_dir: Path) -> tuple[bytes, Scored]:
    """The holdout scores a worker handed over as its boosting summed them (see :func:`_fit`)."""
    out = job_dir / OUT_DIR
    classes = json.loads((out / SCORES_CLASSES_FILE).read_text())
    data = (out / SCORES_FILE).read_bytes()
    return data, Scored.from_arrays(data, classes, None)


def _challenger_scores(outcome: Outcome, early: tuple[bytes, Scored] | None) -> Scored | None:
    """The challenger's holdout scores the worker handed over (those read ``early`` where
    they are the same), with its latency and the metrics it computed on them."""
    if outcome.holdout_scores is None:
        return None
    held = outcome.result.get("holdout_scores") or {}
    classes, ms_per_row = held.get("classes"), held.get("ms_per_row")
    # the worker finishes its latency probe while the version is registered and judged
    later = outcome.latency if held.get("latency_pending") else None
    if early is not None and early[0] == outcome.holdout_scores and early[1].classes == classes:
        scores = dataclasses.replace(early[1], ms_per_row=ms_per_row, later=later)
    else:
        scores = Scored.from_arrays(outcome.holdout_scores, classes, ms_per_row, later)
    # The worker computed its metrics on these very scores: the gates need not again.
    scores.outputs.remember((outcome.result.get("metrics") or {}).get("holdout") or {})
    return scores


def _register_fitted(step: TrainingStep, run: Run, params: dict[str, Any], fitted: _Fitted) -> _Trained:
    """Register the fitted model and keep its holdout scores and log for judging and the run's record."""
    outcome = fitted.outcome
    # The log is stored (and flushed to disk) beside the model's registration, not after it.
    log_put = ahead(
        lambda: step.store.artifacts.put(outcome.log.encode()) if outcome.log else None, "evertrain-log"
    )
    version, metrics = _register(
        step, run, params, outcome, fitted.snapshots, fitted.window, fitted.sweep_info
    )
    extra = dict(
        fitted.extra,
        candidates=outcome.result.get("candidates"),
        curves=outcome.result.get("curves", {}),
        info=outcome.result.get("info", {}),
        log_tail=outcome.log_tail,
        log_artifact=log_put.result(),
    )
    return _Trained(
        version,
        fitted.snapshots,
        metrics,
        extra,
        fitted.window,
        fitted.scores,
        fitted.champion_scores,
        ahead=fitted.ahead,
    )


def _registered_before(step: TrainingStep, run: Run, version: int) -> _Trained:
    """A version this run registered before it was stopped: found, not trained again."""
    snaps = {s["role"]: s["id"] for s in step.store.registry.get_version(step.name, version).snapshots}
    extra = {"resumed": True, "note": "version was registered before the step stopped"}
    return _Trained(version, snaps, dict(run.metrics), extra, registered_now=False)


def _judge(step: TrainingStep, run: Run, trained: _Trained) -> dict[str, Any]:
    """The gates' report on the version: one stored before a stop, else a fresh evaluation."""
    started = time.perf_counter()
    store, name, window = step.store, step.name, trained.window
    step.report("checking the gates")
    report = (
        None if trained.registered_now else _existing_report(store, name, trained.version, run.id)
    ) or evaluate_version(
        store,
        step.spec,
        name,
        trained.version,
        project=step.project,
        actor=step.actor,
        run_id=run.id,
        challenger_scores=trained.scores,
        champion_scores=trained.champion_scores,
        holdout_rows=None if window is None else window.holdout,
        ahead=trained.ahead,
    ).to_dict()
    step.timed("evaluate", started)
    step.timings["score"] = float(trained.metrics.get("score_seconds") or 0.0) + float(
        (report.get("timings") or {}).get("score") or 0.0
    )
    return report


def _finish(
    step: TrainingStep, run: Run, trained: _Trained, report: dict[str, Any] | None, total_started: float
) -> str:
    """Finish the run as succeeded with its result; the outcome: registered, accepted or rejected."""
    outcome_name = "registered" if report is None else ("accepted" if report["passed"] else "rejected")
    step.timings["total"] = time.perf_counter() - total_started
    step.timings["overhead"] = step.timings["total"] - float(trained.metrics.get("fit_seconds") or 0.0)
    result = dict(
        trained.extra,
        version=trained.version,
        outcome=outcome_name,
        snapshots=trained.snapshots,
        timings=step.timings,
        gates=None if report is None else {"passed": report["passed"], "reason": report["reason"]},
    )
    step.store.runs.finish(run.id, "succeeded", metrics=trained.metrics, result=result)
    return outcome_name


def _register(
    step: TrainingStep,
    run: Run,
    params: dict[str, Any],
    outcome: Outcome,
    snaps: dict[str, str],
    window: Window,
    sweep_info: dict[str, Any] | None,
) -> tuple[int, dict[str, Any]]:
    started = time.perf_counter()
    store, spec = step.store, step.spec
    assert outcome.model is not None  # checked by the caller
    result = outcome.result
    # The bytes were checked against this hash when the training handed them over.
    digest = store.artifacts.put(outcome.model, digest=str(result["model_sha256"]))
    info = result.get("info", {})
    if result["framework"] == "lora":
        # The adapter names its base by hash; the base goes into the store once, beside it.
        store_base(store.artifacts, str(info["base_model_uri"]), str(info["base_model_sha256"]))
    measured = result.get("metrics", {})
    version_metrics = dict(measured.get("holdout", {}))
    version_metrics.update({f"valid_{k}": v for k, v in measured.get("valid", {}).items()})
    trainer = spec.model.trainer
    version_params = {
        "trainer": trainer.kind,
        "estimator": trainer.estimator,
        "callable": trainer.callable,
        "params": {**trainer.params, **(sweep_info or {}).get("best_params", {})},
        "seed": trainer.seed,
        "features": window.columns.features,
        "cutoff": params["cutoff"],
        "window": window.info,
        **{k: v for k, v in result.get("info", {}).items() if isinstance(v, int | float | str)},
    }
    if trainer.lora is not None:
        # lineage: the fine-tuning settings (the base and the worker count are in the info above)
        version_params["lora"] = trainer.lora.model_dump(mode="json")
    if result.get("candidates"):
        # lineage: which training sets were tried after the change, their scores and the choice
        version_params["candidates"] = result["candidates"]
    mv = store.registry.register(
        spec.model.name,
        digest,
        framework=result["framework"],
        actor=step.actor,
        params=version_params,
        metrics=version_metrics,
        snapshots=[(sid, role) for role, sid in snaps.items()],
        parent=params.get("parent"),
        trigger=params.get("trigger"),
        code_version=params.get("code_version"),
        run_id=run.id,
        reason=params.get("reason") or f"trained by run {run.id}",
    )
    step.timed("register", started)
    run_metrics = {
        "train_seconds": outcome.seconds,
        "fit_seconds": result.get("fit_seconds"),
        "score_seconds": result.get("score_seconds"),
        "job_seconds": result.get("job_seconds"),
        "valid": measured.get("valid", {}),
        "holdout": measured.get("holdout", {}),
        **{k: v for k, v in result.get("info", {}).items() if isinstance(v, int | float)},
    }
    return mv.version, run_metrics


def _existing_report(store: Store, name: str, version: int, run_id: str) -> dict[str, Any] | None:
    """A report this run already stored before it was stopped (so a resumed step does not judge twice)."""
    for evaluation in store.lineage.evaluations(name, version):
        if (evaluation["report"] or {}).get("run_id") == run_id:
            return dict(evaluation["report"])
    return None


def _result_of(run: Run, *, resumed: bool) -> TrainResult:
    result = run.result or {}
    gates = result.get("gates")
    report = None if gates is None else {"passed": gates["passed"], "reason": gates["reason"]}
    return TrainResult(
        str(run.model),
        run.id,
        result.get("version"),
        str(result.get("outcome")),
        resumed,
        dict(result.get("snapshots") or {}),
        dict(run.metrics),
        report,
        dict(result.get("timings") or {}),
    )
