"""An optional small hyperparameter sweep on retrain, inside the training budget.

``training.sweep`` in the spec names the number of trials and, for each parameter, the
values to try. Optuna's TPE sampler (seeded by the trainer's seed) proposes the next
trial from the scores of the earlier ones; each trial is a job run with the same worker
code as the final training, scored on the *valid* part (the holdout stays untouched for
the gates), and recorded as a run of kind ``trial`` under the training run. The best
trial's model is the one registered: it was trained on exactly the training data, so
training it again would only repeat the work.

- Locally (``inline`` and ``local`` executors), trials run one after another through the
  executor; they stop early when the day's budget is spent, and a trial whose outputs are
  already in its folder (the step was killed and resumed) is not run again.
- On Ray, the sweep is a Ray Tune experiment with the same Optuna search: trials run as
  Tune trials, as many at once as the cluster has CPUs for, within the budget left
  (``time_budget_s``); each reports its valid metric and hands its outputs back as a Tune
  checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evertrain.evaluate.metrics import get_metric
from evertrain.exceptions import UsageError
from evertrain.store import Store
from evertrain.store.runs import Run
from evertrain.train.executors import (
    Executor,
    Outcome,
    RayExecutor,
    collect,
    job_inputs,
    run_job_from_bytes,
)
from evertrain.train.raycluster import stdout_to_stderr
from evertrain.train.worker import DATA_SUFFIX, JOB_FILE, OUT_DIR, PARENT_FILE, RESULT_FILE

#: The metric a sweep ranks trials by when no champion gate names one.
DEFAULT_SWEEP_METRIC = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}


def sweep_metric(spec: Any) -> str:
    """The first champion gate's metric (what promotion will judge), else the task's default."""
    for gate in spec.gates:
        if gate.kind in ("non_inferiority", "superiority", "auto"):
            return str(gate.metric)
    return DEFAULT_SWEEP_METRIC[spec.model.task]


@dataclass
class SweepResult:
    best_params: dict[str, Any]
    best_value: float | None
    best: Outcome | None
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _check_space(spec: Any) -> None:
    """Refuse, before any trial runs, a sweep space that names parameters the trainer has not.

    Each trial's settings are the spec's trainer with the trial's values; the workers take
    them as written (see :class:`evertrain.train.worker.TrainerSettings`), so they are
    checked here, against the same rules as the spec's own ``params``.
    """
    from pydantic import ValidationError

    trainer = spec.model.trainer
    tried = {name: values[0] for name, values in spec.training.sweep.space.items() if values}
    params = {**trainer.params, **tried}
    try:
        type(trainer).model_validate(dict(trainer.model_dump(), params=params))
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"training.sweep.space: {reason}") from None


def _trial_folder(job_dir: Path, index: int, params: dict[str, Any]) -> Path:
    folder = job_dir / "trials" / str(index)
    folder.mkdir(parents=True, exist_ok=True)
    for item in job_dir.iterdir():
        if item.is_file() and (item.suffix == DATA_SUFFIX or item.name == PARENT_FILE):
            target = folder / item.name
            if not target.exists():
                shutil.copyfile(item, target)
    job = json.loads((job_dir / JOB_FILE).read_text())
    job["trainer"] = dict(job["trainer"], params={**job["trainer"].get("params", {}), **params})
    job["checkpoint_dir"] = str(folder / "checkpoints")
    job["fingerprint"] = f"{job['fingerprint']}:trial:{index}:{json.dumps(params, sort_keys=True)}"
    job["score_valid"] = True
    (folder / JOB_FILE).write_text(json.dumps(job, sort_keys=True))
    return folder


def run_sweep(
    store: Store,
    spec: Any,
    run: Run,
    job_dir: Path,
    executor: Executor,
    seconds_left: float,
    tables: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Run up to ``training.sweep.trials`` trials of the job in ``job_dir``; the best one wins.

    ``tables``: the job's data in memory, for an executor in this process.
    """
    try:
        import optuna
    except ImportError:
        raise UsageError("training.sweep.trials > 0 needs Optuna: pip install 'evertrain[sweep]'") from None
    sweep = spec.training.sweep
    if not sweep.space:
        raise UsageError("training.sweep.trials > 0 needs training.sweep.space (parameter -> values to try)")
    _check_space(spec)
    metric = get_metric(sweep_metric(spec))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(executor, RayExecutor):
        return _tune_sweep(store, spec, run, job_dir, executor, seconds_left, metric.name)
    study = optuna.create_study(
        direction="maximize" if metric.higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=spec.model.trainer.seed),
    )
    result = SweepResult({}, None, None, metric.name)
    worst = -math.inf if metric.higher_is_better else math.inf
    for index in range(sweep.trials):
        budget_left = seconds_left - result.seconds
        if budget_left <= 0:
            break
        trial = study.ask()
        params = {name: trial.suggest_categorical(name, list(values)) for name, values in sweep.space.items()}
        folder = _trial_folder(job_dir, index, params)
        trial_run = store.runs.start(
            "trial",
            model=spec.model.name,
            key=f"{run.id}:trial:{index}",
            params={"trial": index, "params": params},
            parent_id=run.id,
        )
        if (folder / OUT_DIR / RESULT_FILE).is_file():
            outcome = collect(folder, float(trial_run.metrics.get("train_seconds") or 0.0))
        else:
            outcome = executor.run(folder, min(budget_left, spec.model.trainer.time_limit), tables)
            result.seconds += outcome.seconds
        value = _valid_value(outcome, metric.name)
        study.tell(trial, worst if value is None else value)
        _record(store, trial_run, index, params, outcome, value, result, metric.higher_is_better)
        outcome.wait_for_worker()  # the next trial's worker starts ahead of it, as a step's would
    return result


def _valid_value(outcome: Outcome, metric: str) -> float | None:
    if not outcome.ok:
        return None
    value = (outcome.result.get("metrics", {}).get("valid", {}) or {}).get(metric)
    return None if value is None else float(value)


def _record(
    store: Store,
    trial_run: Run,
    index: int,
    params: dict[str, Any],
    outcome: Outcome,
    value: float | None,
    result: SweepResult,
    higher_is_better: bool,
) -> None:
    """Finish the trial's run and keep the trial if it is the best so far."""
    store.runs.finish(
        trial_run.id,
        "succeeded" if outcome.ok else "failed",
        metrics={"train_seconds": outcome.seconds, result.metric: value},
        result={"log_tail": outcome.log_tail},
        error=outcome.error,
    )
    result.trials.append(
        {"trial": index, "params": params, "value": value, "ok": outcome.ok, "run_id": trial_run.id}
    )
    better = value is not None and (
        result.best_value is None
        or (value > result.best_value if higher_is_better else value < result.best_value)
    )
    if better:
        result.best_params, result.best_value, result.best = params, value, outcome


# -- on Ray: a Ray Tune experiment --------------------------------------------------------------

#: The number a failed Tune trial reports, worse than any real value of the metric.
_FAILED = 1e300


def _tune_trial(config: dict[str, Any], files: dict[str, bytes], metric: str, sign: float) -> None:
    """One Tune trial: the job with the trial's params, run by the same worker code as any job.

    Reports ``value`` (the valid metric, with ``sign`` making lower better) and hands the
    job's outputs back as a checkpoint.
    """
    import tempfile

    from ray import tune

    job = json.loads(files[JOB_FILE])
    job["trainer"] = dict(job["trainer"], params={**job["trainer"].get("params", {}), **config})
    job["fingerprint"] = f"{job['fingerprint']}:trial:{json.dumps(config, sort_keys=True)}"
    job["score_valid"] = True
    produced = run_job_from_bytes({**files, JOB_FILE: json.dumps(job, sort_keys=True).encode()}, None)
    value = None
    if f"{OUT_DIR}/{RESULT_FILE}" in produced:
        found = json.loads(produced[f"{OUT_DIR}/{RESULT_FILE}"])["metrics"].get("valid", {}).get(metric)
        value = None if found is None else sign * float(found)
    with tempfile.TemporaryDirectory(prefix="evertrain-trial-") as tmp:
        for name, data in produced.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        tune.report(
            {"value": _FAILED if value is None else value, "ok": value is not None},
            checkpoint=tune.Checkpoint.from_directory(tmp),
        )


def tune_storage(store: Store) -> dict[str, Any]:
    """Where Tune keeps a sweep's results: under the artifact store's URL (``<artifacts>/tune``),
    through the same filesystem and storage options, so every node of a cluster reaches them."""
    import pyarrow.fs as pafs
    from fsspec.implementations.local import LocalFileSystem

    from evertrain.store.storage import open_fs

    fs, root = open_fs(store.artifacts.url)
    path = f"{root.rstrip('/')}/tune"
    if isinstance(fs, LocalFileSystem):
        return {"storage_path": path}
    return {"storage_path": path, "storage_filesystem": pafs.PyFileSystem(pafs.FSSpecHandler(fs))}


def _tune_sweep(
    store: Store, spec: Any, run: Run, job_dir: Path, executor: RayExecutor, seconds_left: float, metric: str
) -> SweepResult:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    executor.connect()  # joins the cluster, or starts a local Ray
    sweep = spec.training.sweep
    higher_is_better = get_metric(metric).higher_is_better
    sign = -1.0 if higher_is_better else 1.0  # Tune minimizes ``value``
    files = job_inputs(job_dir)
    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_parameters(_tune_trial, files=files, metric=metric, sign=sign),
        param_space={name: tune.choice(list(values)) for name, values in sweep.space.items()},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                metric="value", mode="min", sampler=optuna.samplers.TPESampler(seed=spec.model.trainer.seed)
            ),
            num_samples=sweep.trials,
            time_budget_s=seconds_left if math.isfinite(seconds_left) else None,
        ),
        run_config=tune.RunConfig(name=f"sweep-{run.id}", verbose=0, **tune_storage(store)),
    )
    with stdout_to_stderr():
        grid = tuner.fit()
    result = SweepResult({}, None, None, metric, seconds=time.perf_counter() - started)
    for index in range(len(grid)):
        trial = grid[index]
        params = {name: (trial.config or {}).get(name) for name in sweep.space}
        folder = job_dir / "trials" / str(index)
        folder.mkdir(parents=True, exist_ok=True)
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as produced:
                shutil.copytree(produced, folder, dirs_exist_ok=True)
        seconds = float((trial.metrics or {}).get("time_total_s") or 0.0)
        error = None if trial.error is None else f"the Tune trial failed: {trial.error}"
        outcome = collect(folder, seconds, error)
        trial_run = store.runs.start(
            "trial",
            model=spec.model.name,
            key=f"{run.id}:trial:{index}",
            params={"trial": index, "params": params, "engine": "ray-tune"},
            parent_id=run.id,
        )
        _record(
            store, trial_run, index, params, outcome, _valid_value(outcome, metric), result, higher_is_better
        )
    return result
