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

import contextlib
import hashlib
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evertrain import settings
from evertrain.__version__ import __version__
from evertrain._background import yield_to_training
from evertrain.data.snapshots import table_bytes, take_snapshot
from evertrain.data.sources import open_source, read_table
from evertrain.data.tables import arrow_table
from evertrain.data.windows import WEIGHT_COLUMN, Window, make_window
from evertrain.evaluate.evaluation import evaluate_version
from evertrain.evaluate.metrics import DEFAULT_METRICS
from evertrain.evaluate.scoring import Scored, importable, load_model, predict_outputs
from evertrain.exceptions import ConflictError, EvertrainError, IntegrityError, NotFoundError, TrainingFailed
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.artifacts import sha256_bytes
from evertrain.store.registry import CHAMPION
from evertrain.store.runs import Run
from evertrain.train.budget import Leases, TrainingBudget, heartbeat, holder_id
from evertrain.train.executors import Executor, Outcome, get_executor
from evertrain.train.sweep import run_sweep
from evertrain.train.worker import DATA_PARTS, PARENT_FILE, TrainJob, write_parts

RUN_KIND = "train"
RUN_LEASE_PREFIX = "train-run:"
#: Threads a training uses unless its params say (``num_threads``). One, because every
#: executor then computes the same sums in the same order (Ray workers run one thread
#: each), and because several trainings sharing a host with more threads than cores make
#: OpenMP spin: on a busy 2-core machine, 2 LightGBM threads ran 3-5x slower than 1.
DEFAULT_NUM_THREADS = 1
#: Seconds allowed for ``git rev-parse`` when recording the code version.
GIT_TIMEOUT_SECONDS = 5


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


def code_version(project: Path) -> str:
    """The git commit of the project folder, else the evertrain version that trained."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
        sha = out.stdout.strip()
        if out.returncode == 0 and len(sha) == 40:
            return sha
    except (OSError, subprocess.SubprocessError):
        pass
    return f"evertrain-{__version__}"


def _spec_digest(spec: Spec) -> str:
    # Canonical JSON rather than the YAML text: the same content, a tenth of the time.
    text = json.dumps(spec.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _champion(store: Store, name: str) -> int | None:
    try:
        return store.registry.get_alias(name, CHAMPION)
    except NotFoundError:
        return None


def _version_of_run(store: Store, name: str, run_id: str) -> int | None:
    try:
        versions = store.registry.list_versions(name)
    except NotFoundError:
        return None
    return next((v.version for v in versions if v.run_id == run_id), None)


class _Step:
    """One training step in progress; holds what the stages share."""

    def __init__(self, store: Store, spec: Spec, project: Path, executor: Executor, actor: str) -> None:
        self.store = store
        self.spec = spec
        self.project = project
        self.executor = executor
        self.actor = actor
        self.name = spec.model.name
        self.holder = holder_id()
        self.leases = Leases(store)
        self.timings: dict[str, float] = {}
        self.snapshots: _Snapshots | None = None

    # -- claiming ------------------------------------------------------------------------

    def _take(self, run: Run) -> bool:
        return self.leases.acquire(RUN_LEASE_PREFIX + run.id, self.holder)

    def claim(self, key: str | None, params: dict[str, Any]) -> tuple[Run, bool]:
        """The run this step works on, its lease held; and whether it resumes an earlier one."""
        runs = self.store.runs
        if key is None:
            for run in reversed(runs.list(model=self.name, kind=RUN_KIND)):
                if run.status == "running" and self._take(run):
                    return run, True
            run = runs.start(RUN_KIND, model=self.name, params=params)
            self._take(run)
            return run, False
        attempt, last, found = 1, None, runs.find(key)
        while found is not None:
            last, attempt = found, attempt + 1
            found = runs.find(f"{key}#{attempt}")
        if last is not None and last.status == "succeeded":
            return last, True
        if last is not None and last.status == "running":
            if self._take(last):
                return last, True
            raise ConflictError(
                f"training step {last.key!r} is being run by "
                f"{self.leases.holder(RUN_LEASE_PREFIX + last.id)}; not starting it twice"
            )
        run = runs.start(
            RUN_KIND, model=self.name, key=key if last is None else f"{key}#{attempt}", params=params
        )
        if not self._take(run):
            raise ConflictError(f"training step {run.key!r} was claimed by another process a moment ago")
        return run, False

    # -- stages --------------------------------------------------------------------------

    def _timed(self, stage: str, started: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started

    def window(self, cutoff: float) -> tuple[Window, str, Any]:
        started = time.perf_counter()
        spec = self.spec
        source = open_source(
            spec.data.source,
            base=self.project,
            logs_url=self.store.logs_url or settings.logs_url(self.project),
            model=self.name,
            target=spec.model.target,
        )
        window = make_window(source.read(), spec, cutoff)
        self._timed("window", started)
        started = time.perf_counter()
        parts: list[tuple[str, Any, list[str]]] = [
            (role, frame, [source.uri])
            for role, frame in (("train", window.train), ("valid", window.valid), ("holdout", window.holdout))
        ]
        golden = None
        if spec.training.holdout.golden_path:
            golden = read_table(spec.training.holdout.golden_path, base=self.project)
            parts.append(("golden", golden, [f"golden:{self.project / spec.training.holdout.golden_path}"]))
        self.snapshots = _Snapshots(self.store, parts, window.columns.time)
        self._timed("snapshot", started)
        return window, source.uri, golden

    def write_job(self, job_dir: Path, window: Window, parent: int | None) -> TrainJob:
        spec, trainer = self.spec, self.spec.model.trainer
        assert self.snapshots is not None, "write_job follows window"
        job_dir.mkdir(parents=True, exist_ok=True)
        if not self.executor.in_process:
            # The tables the snapshots encode: the worker trains on exactly what lineage records.
            write_parts(job_dir, {role: self.snapshots.tables[role] for role in DATA_PARTS})
        parent_framework = None
        if parent is not None and trainer.warm_start:
            mv = self.store.registry.get_version(self.name, parent)
            (job_dir / PARENT_FILE).write_bytes(self.store.registry.load_artifact(mv))
            parent_framework = mv.framework
        metrics = list(DEFAULT_METRICS[spec.model.task]) + [
            g.metric for g in spec.gates if hasattr(g, "metric")
        ]
        # The worker adds the data's digest to this when it reads or writes a checkpoint.
        fingerprint = hashlib.sha256(
            json.dumps([trainer.model_dump(mode="json"), parent], sort_keys=True, default=str).encode()
        ).hexdigest()
        job = TrainJob(
            trainer=trainer.model_dump(mode="json"),
            task=spec.model.task,
            target=spec.model.target,
            features=window.columns.features,
            seed=trainer.seed,
            time_limit=trainer.time_limit,
            fingerprint=fingerprint,
            weight_column=WEIGHT_COLUMN if WEIGHT_COLUMN in window.train.columns else None,
            project=str(self.project),
            trusted_types=list(spec.model.trusted_types),
            parent_framework=parent_framework,
            checkpoint_dir=str(job_dir / "checkpoints"),
            checkpoint_every=trainer.checkpoint_every,
            checkpoint_seconds=trainer.checkpoint_seconds,
            num_threads=int(trainer.params.get("num_threads") or DEFAULT_NUM_THREADS),
            metrics=list(dict.fromkeys(metrics)),
        )
        job.write(job_dir)
        return job

    def execute(self, run: Run, job_dir: Path, seconds_left: float) -> tuple[Outcome, dict[str, Any] | None]:
        started = time.perf_counter()
        sweep_info = None
        limit = min(self.spec.model.trainer.time_limit, seconds_left)
        tables = None if self.snapshots is None else self.snapshots.tables
        if self.spec.training.sweep.trials > 0:
            sweep = run_sweep(self.store, self.spec, run, job_dir, self.executor, seconds_left, tables)
            sweep_info = {
                "metric": sweep.metric,
                "best_params": sweep.best_params,
                "best_value": sweep.best_value,
                "trials": sweep.trials,
                "seconds": sweep.seconds,
            }
            if sweep.best is None:
                outcome = Outcome(False, sweep.seconds, "", error="no sweep trial produced a model")
            else:
                outcome = sweep.best
                outcome.seconds = sweep.seconds
        else:
            outcome = self.executor.run(job_dir, limit, tables)
        self._timed("train", started)
        return outcome, sweep_info


class _Snapshots:
    """The snapshots of one training: tables now, stored and recorded in a thread meanwhile.

    The training needs only the tables (the worker gets them in memory or as Arrow files);
    encoding them as Parquet, writing them to the artifact store and recording them in
    lineage overlaps the training. :meth:`wait` (before anything refers to them) gives their
    ids, or raises whatever went wrong there.
    """

    def __init__(
        self, store: Store, parts: list[tuple[str, Any, list[str]]], time_column: str | None
    ) -> None:
        self.tables = {role: arrow_table(frame) for role, frame, _ in parts}
        self._ids: dict[str, str] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._save, args=(store, parts, time_column), name="evertrain-snapshots", daemon=True
        )
        self._thread.start()

    def _save(self, store: Store, parts: list[tuple[str, Any, list[str]]], time_column: str | None) -> None:
        yield_to_training()
        try:
            for role, frame, sources in parts:
                data = table_bytes(self.tables[role])
                snap = take_snapshot(store, frame, sources=sources, time_column=time_column, data=data)
                self._ids[role] = snap.id
        except BaseException as exc:  # handed to the waiting thread
            self._error = exc

    def wait(self) -> dict[str, str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._ids)


class _ChampionScorer:
    """Scores the champion on the new holdout in a thread while the challenger trains.

    The gates need both models' scores on the same rows; the champion's do not depend on
    the challenger, so they are computed during training (LightGBM and numpy release the
    GIL while they work) instead of after it. A failure here only means the evaluation
    scores the champion itself.
    """

    def __init__(self, step: _Step, window: Window | None, wanted: bool) -> None:
        self.step = step
        self.window = window
        self.wanted = wanted
        self.scores: dict[int, Scored] = {}
        self._thread: threading.Thread | None = None

    def _work(self, version: int) -> None:
        yield_to_training()
        assert self.window is not None
        spec, store = self.step.spec, self.step.store
        with contextlib.suppress(Exception):
            with importable(str(self.step.project)):
                model = load_model(
                    store, store.registry.get_version(spec.model.name, version), spec.model.trusted_types
                )
                outputs, classes = predict_outputs(
                    model,
                    self.window.holdout,
                    self.window.columns.features,
                    spec.model.task,
                    spec.model.target,
                )
            self.scores[version] = Scored(outputs, classes)

    def __enter__(self) -> _ChampionScorer:
        version = _champion(self.step.store, self.step.name)
        if self.wanted and version is not None and self.window is not None and len(self.window.holdout):
            self._thread = threading.Thread(
                target=self._work, args=(version,), name="evertrain-champion-scores", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()


def _finish_failed(step: _Step, run: Run, outcome: Outcome, extra: dict[str, Any]) -> None:
    log_digest = step.store.artifacts.put(outcome.log.encode()) if outcome.log else None
    step.store.runs.finish(
        run.id,
        "failed",
        metrics={"train_seconds": outcome.seconds},
        result=dict(extra, log_tail=outcome.log_tail, log_artifact=log_digest, timings=step.timings),
        error=outcome.error,
    )


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
) -> TrainResult:
    """Train ``spec``'s model on a fresh window, register it, and judge it (see the module doc).

    ``key`` makes the step idempotent across restarts; ``executor`` overrides
    ``training.executor``; ``evaluate=False`` stops after registering (outcome
    ``registered``). Raises :class:`TrainingFailed` when the training crashed or timed
    out (the failed run keeps the error and the log) and :class:`BudgetExhausted` when
    the budget or the concurrency cap says no.
    """
    total_started = time.perf_counter()
    project = Path(project).resolve()
    if isinstance(executor, str) or executor is None:
        executor = get_executor(executor or spec.training.executor)
    step = _Step(store, spec, project, executor, actor or settings.actor())
    name = spec.model.name
    parent = _champion(store, name)
    params: dict[str, Any] = {
        "cutoff": store.clock(),
        "trigger": trigger,
        "reason": reason,
        "parent": parent,
        "executor": executor.name,
        "seed": spec.model.trainer.seed,
        "trainer": spec.model.trainer.model_dump(mode="json"),
        "window": spec.training.window.model_dump(mode="json"),
        "holdout": spec.training.holdout.model_dump(mode="json"),
        "spec_sha256": _spec_digest(spec),
        "code_version": code_version(project),
    }
    run, resumed = step.claim(key, params)
    if run.status == "succeeded":
        return _result_of(run, resumed=True)
    run_lease = RUN_LEASE_PREFIX + run.id
    params = run.params  # a resumed run keeps its own cut-off, parent and trigger
    job_dir = settings.state_dir(project) / "work" / run.id
    try:
        with heartbeat(step.leases, [run_lease], step.holder):
            version = _version_of_run(store, name, run.id)
            snaps: dict[str, str] = {}
            extra: dict[str, Any] = {}
            metrics: dict[str, Any] = {}
            scores: Scored | None = None
            window: Window | None = None
            champion = _ChampionScorer(step, None, False)
            if version is None:
                budget = TrainingBudget(store, name, spec.training.budget)
                seconds_left = budget.check()
                window, source_uri, _golden = step.window(float(params["cutoff"]))
                try:
                    with budget.slot(step.holder), _ChampionScorer(step, window, evaluate) as champion:
                        step.write_job(job_dir, window, params.get("parent"))
                        outcome, sweep_info = step.execute(run, job_dir, seconds_left)
                finally:
                    waited = time.perf_counter()
                    assert step.snapshots is not None
                    snaps = step.snapshots.wait()
                    step._timed("snapshot", waited)
                extra = {"snapshots": snaps, "window": window.info, "source": source_uri, "resumed": resumed}
                if sweep_info is not None:
                    extra["sweep"] = sweep_info
                if not outcome.ok or outcome.model is None:
                    _finish_failed(step, run, outcome, extra)
                    raise TrainingFailed(f"training of model {name!r} failed (run {run.id}): {outcome.error}")
                if sha256_bytes(outcome.model) != outcome.result.get("model_sha256"):
                    raise IntegrityError(
                        f"run {run.id}: the model bytes do not hash to what the worker reported"
                    )
                version, metrics = _register(step, run, params, outcome, snaps, window, sweep_info)
                if outcome.holdout_scores is not None:
                    held = outcome.result.get("holdout_scores") or {}
                    scores = Scored.from_arrays(
                        outcome.holdout_scores, held.get("classes"), held.get("ms_per_row")
                    )
                extra.update(
                    curves=outcome.result.get("curves", {}),
                    info=outcome.result.get("info", {}),
                    log_tail=outcome.log_tail,
                    log_artifact=store.artifacts.put(outcome.log.encode()) if outcome.log else None,
                )
            else:
                extra = {"resumed": True, "note": "version was registered before the step stopped"}
                metrics = dict(run.metrics)
                snaps = {s["role"]: s["id"] for s in store.registry.get_version(name, version).snapshots}
            report = None
            if evaluate:
                started = time.perf_counter()
                report = (
                    _existing_report(store, name, version, run.id)
                    or evaluate_version(
                        store,
                        spec,
                        name,
                        version,
                        project=project,
                        actor=step.actor,
                        run_id=run.id,
                        challenger_scores=scores,
                        champion_scores=champion.scores,
                        holdout_rows=None if window is None else window.holdout,
                    ).to_dict()
                )
                step._timed("evaluate", started)
                step.timings["score"] = float(metrics.get("score_seconds") or 0.0) + float(
                    (report.get("timings") or {}).get("score") or 0.0
                )
            outcome_name = (
                "registered" if report is None else ("accepted" if report["passed"] else "rejected")
            )
            step.timings["total"] = time.perf_counter() - total_started
            step.timings["overhead"] = step.timings["total"] - float(metrics.get("fit_seconds") or 0.0)
            result = dict(
                extra,
                version=version,
                outcome=outcome_name,
                snapshots=snaps,
                timings=step.timings,
                gates=None if report is None else {"passed": report["passed"], "reason": report["reason"]},
            )
            store.runs.finish(run.id, "succeeded", metrics=metrics, result=result)
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
    shutil.rmtree(job_dir, ignore_errors=True)
    return TrainResult(name, run.id, version, outcome_name, resumed, snaps, metrics, report, step.timings)


def _register(
    step: _Step,
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
    digest = store.artifacts.put(outcome.model)
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
    step._timed("register", started)
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
