"""An optional small hyperparameter sweep on retrain, inside the training budget.

``training.sweep`` in the spec names the number of trials and, for each parameter, the
values to try. Optuna's TPE sampler (seeded by the trainer's seed) proposes the next
trial from the scores of the earlier ones; each trial is a job run through the same
executor as the final training (so on Ray, trials run on Ray), scored on the *valid*
part (the holdout stays untouched for the gates), and recorded as a run of kind
``trial`` under the training run. The best trial's model is the one registered: it was
trained on exactly the training data, so training it again would only repeat the work.

Trials stop early when the day's budget is spent. A trial whose outputs are already in
its folder (the step was killed and resumed) is not run again.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evertrain.evaluate.metrics import get_metric
from evertrain.exceptions import UsageError
from evertrain.store import Store
from evertrain.store.runs import Run
from evertrain.train.executors import Executor, Outcome, collect
from evertrain.train.worker import DATA_SUFFIX, JOB_FILE, OUT_DIR, PARENT_FILE, RESULT_FILE

#: The metric a sweep ranks trials by when no champion gate names one.
DEFAULT_SWEEP_METRIC = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}


def sweep_metric(spec: Any) -> str:
    """The first champion gate's metric (what promotion will judge), else the task's default."""
    for gate in spec.gates:
        if gate.kind in ("non_inferiority", "superiority"):
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
    metric = get_metric(sweep_metric(spec))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
        value = (
            (outcome.result.get("metrics", {}).get("valid", {}) or {}).get(metric.name)
            if outcome.ok
            else None
        )
        study.tell(trial, worst if value is None else value)
        store.runs.finish(
            trial_run.id,
            "succeeded" if outcome.ok else "failed",
            metrics={"train_seconds": outcome.seconds, metric.name: value},
            result={"log_tail": outcome.log_tail},
            error=outcome.error,
        )
        result.trials.append(
            {"trial": index, "params": params, "value": value, "ok": outcome.ok, "run_id": trial_run.id}
        )
        better = value is not None and (
            result.best_value is None
            or (value > result.best_value if metric.higher_is_better else value < result.best_value)
        )
        if better:
            result.best_params, result.best_value, result.best = params, value, outcome
    return result
