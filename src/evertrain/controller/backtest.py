"""Backtests: replay a historical table through the real loop, beside simple baselines.

A team should be able to tune its retraining triggers on its own history before trusting
them in production. :func:`backtest` cuts a table into batches and replays it with
:class:`~evertrain.controller.replay.Replay` in a throwaway project (a real SQLite store
and artifact folder in a temporary directory): the champion (and a canary at its share)
scores each batch, labels arrive ``label_delay`` batches later, and after every batch the
real controller runs one cycle (monitor, policy, trainer, gates, rollout) on a
simulated clock. Beside it, baselines replay the same batches with the same trainer and
the same training window but no monitoring and no gates: never retrain, retrain every N
batches, and any :class:`RetrainRule` passed in (the benchmark adds one that retrains
when River's ADWIN fires on the error stream).

What differs from live, and why:

- Rollouts follow the spec's own plan (shadow, canary steps, the watch after promotion),
  as live: with a label delay a canary waits for its evidence exactly as it would in
  production, and the batches it takes are part of what a backtest should show. The
  replay logs no latency (there is no network), so a canary is judged on errors and
  quality, never on the timing noise of the machine running the backtest.
- Training runs in-process (the ``inline`` executor runs the same job code as ``local``
  without a child process), and the data source is the replay's warehouse folder.
- Each batch takes ``batch_seconds`` of simulated time (default: the spec's
  ``policy.cycle_interval``, one controller cycle per batch), so cooldowns, daily caps
  and schedules count in batches the way the live loop would count them in cycles.

The first model is trained on the ``warm_batches`` (already labelled history) by the
controller's bootstrap cycle before the first batch is served; it is reported under
``initial`` and is neither a retrain nor a promotion. Each baseline starts from the same
kind of first model trained on the same rows.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(1400, 2))
>>> table = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": (x[:, 0] > 0).astype(int)})
>>> out = backtest(table, target="y", batch_size=200, warm_batches=5, baselines_every=(1,))
>>> len(out["batches"]), out["n_retrains"], sorted(out["baselines"])
(2, 0, ['every_1', 'never'])
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from evertrain.controller.clock import ManualClock
from evertrain.controller.replay import BatchSource, Replay
from evertrain.data.schema import infer_schema
from evertrain.data.windows import make_window
from evertrain.evaluate.scoring import model_frame, wants_categories
from evertrain.exceptions import DataValidationError, NotFoundError, UsageError
from evertrain.monitor.tests import CATEGORICAL, NUMERIC
from evertrain.spec import SourceSpec, Spec
from evertrain.store import Store
from evertrain.train.trainers import TrainContext, get_trainer

#: Simulated time of the first replayed batch: 2026-01-05 00:00 UTC, a Monday, so daily
#: caps and cron schedules start on a day boundary.
START = 1767571200.0
#: Already-labelled batches the first model is trained on before the replay starts.
DEFAULT_WARM_BATCHES = 5
#: Fewest batches a backtest replays after the warm ones: one to serve with the first
#: model, one more for anything the loop decided after it to show.
MIN_REPLAYED_BATCHES = 2
#: Name of the model inside the throwaway project.
MODEL_NAME = "backtest"
#: Where the replay writes labelled rows, relative to the throwaway project.
WAREHOUSE_GLOB = "warehouse/*.parquet"
#: Event and label-arrival time columns the replay writes when the spec names none.
EVENT_TIME, LABEL_TIME = "event_ts", "label_ts"
#: A target with at most this many distinct integer values is a class label, not a number.
MAX_CLASSES = 20
#: Retrain periods of the "retrain every N batches" baselines.
DEFAULT_BASELINES_EVERY = (5, 20)


# -- retrain rules of the baselines ----------------------------------------------------------


class RetrainRule(ABC):
    """When a baseline retrains: told each batch's newly labelled errors, answers a reason or None.

    ``errors`` holds 1 for each wrong prediction (0 for a right one) among the rows whose
    labels arrived at the end of ``batch`` and that the *current* model served; rows the
    previous model served are left out, so a detector is not fooled by the change of
    model itself.
    """

    name: str

    @abstractmethod
    def observe(self, batch: int, errors: np.ndarray) -> str | None:
        """A reason to retrain after ``batch``, or None."""

    def retrained(self) -> None:  # noqa: B027 - optional hook, most rules keep no state
        """The model was just replaced; forget what was learned about the old one."""


class Never(RetrainRule):
    """Train once on the warm batches and never again."""

    name = "never"

    def observe(self, batch: int, errors: np.ndarray) -> str | None:
        return None


class Every(RetrainRule):
    """Retrain after every ``n`` replayed batches, whatever happened."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise UsageError(f"a baseline retrains every n >= 1 batches, got n={n}")
        self.n = n
        self.name = f"every_{n}"
        self._seen = 0

    def observe(self, batch: int, errors: np.ndarray) -> str | None:
        self._seen += 1
        return f"schedule: every {self.n} batches" if self._seen % self.n == 0 else None


# -- inputs --------------------------------------------------------------------------------


def infer_task(values: pd.Series) -> str:
    """binary, multiclass or regression, from the target column's values.

    Booleans and text are classes; integers with at most :data:`MAX_CLASSES` distinct
    values are classes; any other number is a regression target.

    >>> [infer_task(pd.Series(v)) for v in ([0, 1, 1], ["a", "b", "c"], [0.5, 2.0])]
    ['binary', 'multiclass', 'regression']
    """
    distinct = values.dropna().unique()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        as_float = np.asarray(distinct, dtype=float)
        whole = bool(np.all(np.isfinite(as_float)) and np.all(as_float == np.round(as_float)))
        if not whole or len(distinct) > MAX_CLASSES:
            return "regression"
    return "binary" if len(distinct) <= 2 else "multiclass"


def _frame(table: pd.DataFrame | pa.Table) -> pd.DataFrame:
    """The table as pandas with text column names (the spec names columns by text)."""
    if isinstance(table, pa.Table):
        table = table.to_pandas()
    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True).rename(columns=str)
    raise UsageError(f"a backtest replays a pandas DataFrame or a pyarrow Table, got {type(table).__name__}")


def default_spec(frame: pd.DataFrame, target: str, *, name: str = MODEL_NAME) -> Spec:
    """The default spec for ``frame``: every default of evertrain.yaml, the target named, the
    task inferred from it, and the features inferred from the table's schema (its numeric
    and categorical columns)."""
    schema = infer_schema(frame.drop(columns=[target]))
    features = [c.name for c in schema.columns.values() if c.kind in (NUMERIC, CATEGORICAL)]
    if not features:
        raise DataValidationError(
            f"no feature columns: a backtest needs numeric or categorical columns besides the target "
            f"{target!r}, got {list(frame.columns)}"
        )
    return Spec.model_validate(
        {
            "model": {
                "name": name,
                "task": infer_task(frame[target]),
                "target": target,
                "features": features,
            },
            "data": {"source": {"kind": "parquet", "path": WAREHOUSE_GLOB}},
        }
    )


def replay_spec(spec: Spec) -> Spec:
    """``spec`` as the replay runs it: the warehouse as its source and in-process training;
    every policy, trigger, window, gate and rollout step as written."""
    data = spec.data.model_copy(
        update={
            "source": SourceSpec(kind="parquet", path=WAREHOUSE_GLOB),
            "time_column": spec.data.time_column or EVENT_TIME,
            "label_time_column": spec.data.label_time_column or LABEL_TIME,
            "id_column": None,
        }
    )
    training = spec.training.model_copy(update={"executor": "inline"})
    return spec.model_copy(update={"data": data, "training": training})


def _encode_target(frame: pd.DataFrame, target: str, task: str) -> tuple[pd.DataFrame, list[Any] | None]:
    """Class labels as 0..K-1 (sorted order): the replay logs labels as numbers."""
    if task == "regression":
        return frame.assign(**{target: frame[target].astype(float)}), None
    values = frame[target]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return frame, None
    classes = sorted(values.unique().tolist(), key=str)
    codes = {c: i for i, c in enumerate(classes)}
    return frame.assign(**{target: values.map(codes).astype(np.int64)}), classes


def check_table(frame: pd.DataFrame, target: str, *, batch_size: int, warm_batches: int, what: str) -> None:
    """Refuse a table a backtest cannot replay, naming the rule and the bad value."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if warm_batches < 1:
        raise UsageError(
            f"warm batches must be at least 1 (the first model trains on them), got {warm_batches}"
        )
    if target not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:10])) + ("..." if frame.shape[1] > 10 else "")
        raise DataValidationError(f"{what}: target column {target!r} is not in the table (columns: {shown})")
    missing = int(frame[target].isna().sum())
    if missing:
        raise DataValidationError(
            f"{what}: target column {target!r} has {missing} missing values; "
            "a backtest needs every row labelled"
        )
    if frame[target].nunique() < 2:
        raise DataValidationError(
            f"{what}: target column {target!r} holds one value only ({frame[target].iloc[0]!r}): "
            "nothing to learn"
        )
    need = (warm_batches + MIN_REPLAYED_BATCHES) * batch_size
    if len(frame) < need - batch_size + 1:
        raise DataValidationError(
            f"{what}: too few rows: {len(frame)}; a backtest in batches of {batch_size} needs at least "
            f"{warm_batches + MIN_REPLAYED_BATCHES} batches "
            f"({warm_batches} warm, {MIN_REPLAYED_BATCHES} replayed), "
            f"i.e. more than {need - batch_size} rows"
        )


# -- baselines -----------------------------------------------------------------------------


@dataclass
class _Timeline:
    """When the replay says each batch's rows happened and their labels arrived."""

    replay: Replay
    delay: int

    def labelled(self, frame: pd.DataFrame, index: int, arrived: float) -> pd.DataFrame:
        spec = self.replay.spec
        return frame.assign(
            **{
                spec.data.time_column or EVENT_TIME: self.replay.event_times(index, len(frame)),
                spec.data.label_time_column or LABEL_TIME: arrived,
            }
        )

    def end_of(self, index: int) -> float:
        r = self.replay
        return r.start + (index - r.warm_batches + 1) * r.batch_seconds


@dataclass(frozen=True)
class _Fitted:
    model: Any
    features: list[str]


@dataclass
class _Baseline:
    """One baseline's model and record as it replays the batches."""

    rule: RetrainRule
    model: _Fitted
    version: int = 1
    batches: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    correct: int = 0
    rows: int = 0
    served: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # batch -> (version, predictions)


def _fit(spec: Spec, known: pd.DataFrame, cutoff: float) -> tuple[_Fitted, float]:
    """The spec's trainer on the spec's window of ``known`` at ``cutoff``; the model and fit seconds."""
    window = make_window(known, spec, cutoff)
    trainer = get_trainer(spec.model.trainer)
    context = TrainContext(
        task=spec.model.task,
        target=spec.model.target,
        features=window.columns.features,
        seed=spec.model.trainer.seed,
        early_stopping_rounds=spec.model.trainer.early_stopping_rounds,
        log=lambda _line: None,
    )
    began = time.perf_counter()
    model = trainer.fit(window.train, window.valid, context)
    return _Fitted(model, window.columns.features), time.perf_counter() - began


def _predict(fitted: _Fitted, frame: pd.DataFrame) -> np.ndarray:
    X = model_frame(frame, fitted.features, categorical_as_category=wants_categories(fitted.model))
    return np.asarray(fitted.model.predict(X), dtype=float)


def _score(task: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of right predictions (classification) or R^2 (regression)."""
    if task == "regression":
        total = float(np.sum((labels - labels.mean()) ** 2))
        return 1.0 - float(np.sum((labels - predictions) ** 2)) / total if total > 0 else 0.0
    return float(np.mean(predictions == labels))


def run_baselines(
    spec: Spec,
    source: BatchSource,
    timeline: _Timeline,
    rules: Sequence[RetrainRule],
) -> dict[str, dict[str, Any]]:
    """Replay the batches under each rule with the spec's trainer and window, no gates, no monitor."""
    replay = timeline.replay
    target, task = spec.model.target, spec.model.task
    warm = replay.warm_batches
    known_parts = [timeline.labelled(source.offline_batch(i), i, replay.start) for i in range(warm)]
    first, seconds = _fit(spec, pd.concat(known_parts, ignore_index=True), replay.start)
    runs = [_Baseline(rule, first, train_seconds=seconds) for rule in rules]
    for index in range(warm, source.n_batches):
        frame = source.served(index)
        labels = frame[target].to_numpy(dtype=float)
        # Every baseline that retrains now sees the same labelled rows, so one fit serves them all.
        fitted_now: tuple[_Fitted, float] | None = None
        for run in runs:
            predictions = _predict(run.model, frame)
            run.served[index] = (run.version, predictions)
            score = _score(task, predictions, labels)
            run.batches.append({"index": index, "accuracy": score, "model_version": run.version})
            run.correct += int(np.sum(predictions == labels)) if task != "regression" else 0
            run.rows += len(frame)
        due = index - timeline.delay
        now = timeline.end_of(index)
        if due >= warm:
            known_parts.append(timeline.labelled(source.offline_batch(due), due, now))
        for run in runs:
            errors = np.empty(0)
            if due >= warm:
                version, predictions = run.served.pop(due)
                due_labels = source.served(due)[target].to_numpy(dtype=float)
                if version == run.version:
                    errors = (predictions != due_labels).astype(float)
            reason = run.rule.observe(index, errors)
            if reason is None or index == source.n_batches - 1:
                continue
            if fitted_now is None:
                fitted_now = _fit(spec, pd.concat(known_parts, ignore_index=True), now)
            run.model, fit_seconds = fitted_now
            run.version += 1
            run.train_seconds += fit_seconds
            run.retrains.append({"batch": index, "reason": reason, "version": run.version})
            run.rule.retrained()
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        scores = [b["accuracy"] for b in run.batches]
        out[run.rule.name] = {
            "batches": run.batches,
            "retrains": run.retrains,
            "mean_accuracy": _mean(run, scores, task),
            "n_retrains": len(run.retrains),
            "train_seconds": run.train_seconds,
        }
    return out


def _mean(run: _Baseline, scores: list[float], task: str) -> float | None:
    if not scores:
        return None
    if task == "regression":
        return float(np.mean(scores))
    return run.correct / run.rows if run.rows else None


# -- the replay of the policy --------------------------------------------------------------


def _aliases(store: Store, name: str) -> dict[str, int | None]:
    try:
        return dict(store.registry.get_aliases(name))
    except NotFoundError:
        return {}


def _train_rows(store: Store, name: str, version: int | None) -> int | None:
    """How many rows a version was fitted on (from its registered window), if it was registered."""
    if version is None:
        return None
    window = store.registry.get_version(name, int(version)).params.get("window") or {}
    rows = window.get("n_train")
    return None if rows is None else int(rows)


def _served_score(replay: Replay, index: int, task: str, accuracy: float | None) -> float | None:
    if task != "regression":
        return accuracy
    from evertrain.controller import observe

    r = replay
    began = r.start + (index - r.warm_batches) * r.batch_seconds
    logged = observe.read_log(
        r.store.logs_url or "",
        "predictions",
        r.spec.model.name,
        since=began,
        until=began + r.batch_seconds,
        columns=["prediction", "ts"],
    )
    if logged.num_rows == 0:
        return None
    labels = r.source.served(index)[r.spec.model.target].to_numpy(dtype=float)
    return _score(task, np.asarray(logged["prediction"], dtype=float), labels)


def run_policy(replay: Replay, on_batch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Replay every batch through the controller; the record of what the loop did."""
    assert replay.controller is not None
    store, spec = replay.store, replay.spec
    name, task = spec.model.name, spec.model.task
    replay.prepare()
    replay.clock.set(replay.start)
    boot = replay.controller.cycle()
    trained = boot.get("train") or {}
    first_seconds = float(trained.get("seconds") or 0.0)
    initial = {
        "version": trained.get("version"),
        "reason": "; ".join((boot.get("decide") or {}).get("reasons", [])),
        "train_seconds": first_seconds,
    }
    if _aliases(store, name).get("champion") is None:
        raise DataValidationError(
            f"the first model could not be trained on the {replay.warm_batches} warm batches: "
            f"{(boot.get('train') or {}).get('error') or (boot.get('gate') or {}).get('reason') or boot}"
        )
    batches: list[dict[str, Any]] = []
    retrains: list[dict[str, Any]] = []
    promotions: list[dict[str, Any]] = []
    rollbacks: list[dict[str, Any]] = []
    train_seconds = first_seconds
    correct = rows = 0
    for index in range(replay.warm_batches, replay.source.n_batches):
        before = _aliases(store, name)
        result = replay.batch(index)
        cycle = result["cycle"]
        accuracy = _served_score(replay, index, task, result["accuracy"])
        n = len(replay.source.served(index))
        if task != "regression" and accuracy is not None:
            correct += round(accuracy * n)
            rows += n
        decision = cycle.get("decide") or {}
        monitored = cycle.get("monitor") or {}
        batches.append(
            {
                "index": index,
                "accuracy": accuracy,
                "model_version": before.get("champion"),
                "canary": before.get("canary"),
                "drifted": list((monitored.get("drift") or {}).get("drifted_columns", [])),
                "decision": decision.get("action"),
                "held": decision.get("held", []),
            }
        )
        trained = cycle.get("train") or {}
        gate = cycle.get("gate") or {}
        if decision.get("action") == "retrain":
            retrains.append(
                {
                    "batch": index,
                    "reason": "; ".join(decision.get("reasons", [])),
                    "triggers": decision.get("triggers", []),
                    "version": trained.get("version"),
                    "train_rows": _train_rows(store, name, trained.get("version")),
                    "gates": gate.get("status"),
                    "gate_reason": gate.get("reason"),
                }
            )
            train_seconds += float(trained.get("seconds") or 0.0)
        after = _aliases(store, name)
        rollout = cycle.get("rollout") or {}
        if after.get("champion") != before.get("champion"):
            entry = {"batch": index, "version": after.get("champion")}
            if rollout.get("outcome") == "rolled_back":
                rollbacks.append(
                    {**entry, "from": before.get("champion"), "reasons": rollout.get("reasons", [])}
                )
            else:
                promotions.append(entry)
        elif rollout.get("outcome") == "rolled_back":
            rollbacks.append(
                {
                    "batch": index,
                    "version": rollout.get("version"),
                    "from": "canary",
                    "reasons": rollout.get("reasons", []),
                }
            )
        if on_batch is not None:
            on_batch(
                {
                    "batch": index,
                    "accuracy": accuracy,
                    "decision": decision.get("action"),
                    "champion": after.get("champion"),
                }
            )
    scores = [b["accuracy"] for b in batches if b["accuracy"] is not None]
    if task == "regression":
        mean = float(np.mean(scores)) if scores else None
    else:
        mean = correct / rows if rows else None
    return {
        "initial": initial,
        "batches": batches,
        "retrains": retrains,
        "promotions": promotions,
        "rollbacks": rollbacks,
        "mean_accuracy": mean,
        "n_retrains": len(retrains),
        "train_seconds": train_seconds,
    }


def backtest(
    table: pd.DataFrame | pa.Table,
    *,
    spec: Spec | None = None,
    target: str | None = None,
    batch_size: int = 1000,
    label_delay: int | None = None,
    warm_batches: int = DEFAULT_WARM_BATCHES,
    batch_seconds: float | None = None,
    baselines_every: Iterable[int] = DEFAULT_BASELINES_EVERY,
    rules: Sequence[RetrainRule] = (),
    workdir: Path | str | None = None,
    keep: bool = False,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
    what: str = "the table",
) -> dict[str, Any]:
    """Replay ``table`` (rows in time order) through the loop and the baselines; the JSON record.

    ``spec`` is a project's spec (its trainer, window, triggers, policy, gates and
    rollout are used as written); without one, :func:`default_spec` of the table with
    ``target``. ``label_delay`` is in batches (default: the spec's ``data.label_delay``
    rounded up to whole batches). ``workdir`` is where the throwaway project lives
    (default: a temporary folder, deleted afterwards unless ``keep``; a given one is
    kept). ``rules`` add baselines to never and every-N. ``what`` names the table in errors.

    Returns ``{"batches": [{"index", "accuracy", "model_version", "canary"}],
    "retrains": [{"batch", "reason", ...}], "promotions": [{"batch", "version"}],
    "rollbacks", "mean_accuracy", "n_retrains", "train_seconds", "initial", "baselines":
    {name: {"batches", "retrains", "mean_accuracy", "n_retrains", "train_seconds"}},
    "settings": {...}}``; for regression, ``accuracy`` holds R^2 per batch.
    """
    frame = _frame(table)
    if spec is None:
        if target is None:
            raise UsageError("outside a project a backtest needs the target column (--target COL)")
        check_table(frame, target, batch_size=batch_size, warm_batches=warm_batches, what=what)
        spec = default_spec(frame, target)
    else:
        if target is not None and target != spec.model.target:
            raise UsageError(
                f"the project's model {spec.model.name!r} predicts {spec.model.target!r}, not {target!r}"
            )
        target = spec.model.target
        check_table(frame, target, batch_size=batch_size, warm_batches=warm_batches, what=what)
    task = spec.model.task
    frame, classes = _encode_target(frame, target, task)
    if spec.model.features:
        absent = [f for f in spec.model.features if f not in frame.columns]
        if absent:
            raise DataValidationError(
                f"{what}: feature column(s) {', '.join(map(repr, absent))} of the spec are absent"
            )
        frame = frame[[*spec.model.features, target]]
    seconds = float(batch_seconds if batch_seconds is not None else spec.policy.cycle_interval)
    if seconds <= 0:
        raise UsageError(f"batch seconds must be positive, got {seconds}")
    delay = label_delay if label_delay is not None else math.ceil(spec.data.label_delay / seconds)
    if delay < 0:
        raise UsageError(f"label delay must be 0 or more batches, got {delay}")
    every = sorted(set(int(n) for n in baselines_every))
    source = BatchSource.from_frame(frame, batch_size)
    run_spec = replay_spec(spec)

    made = workdir is None
    root = Path(tempfile.mkdtemp(prefix="evertrain-backtest-")) if made else Path(workdir)  # type: ignore[arg-type]
    if not made and root.exists() and any(root.iterdir()):
        raise UsageError(f"backtest folder {root} is not empty; give a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    state = root / ".evertrain"
    state.mkdir(exist_ok=True)
    clock = ManualClock(START)
    # An explicit store in the folder, never EVERTRAIN_DB_URL: a backtest must not write into a shared store.
    store = Store(
        f"sqlite:///{(state / 'evertrain.db').resolve()}",
        str((state / "artifacts").resolve()),
        logs_url=str((state / "logs").resolve()),
        clock=clock,
    ).open()
    began = time.perf_counter()
    try:
        replay = Replay(
            store,
            run_spec,
            root,
            source=source,
            clock=clock,
            start=START,
            batch_seconds=seconds,
            label_delay_batches=delay,
            warm_batches=warm_batches,
        )
        policy = run_policy(replay, on_batch)
        policy_seconds = time.perf_counter() - began
        rule_list: list[RetrainRule] = [Never(), *(Every(n) for n in every), *rules]
        baselines = run_baselines(run_spec, source, _Timeline(replay, delay), rule_list)
    finally:
        store.close()
        if made and not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {
        **policy,
        "baselines": baselines,
        "settings": {
            "model": spec.model.name,
            "task": task,
            "target": target,
            "classes": classes,
            "features": spec.model.features,
            "rows": len(frame),
            "batch_size": batch_size,
            "n_batches": source.n_batches,
            "warm_batches": warm_batches,
            "label_delay_batches": delay,
            "batch_seconds": seconds,
            "metric": "r2" if task == "regression" else "accuracy",
            "policy_seconds": policy_seconds,
            "workdir": str(root) if (keep or not made) else None,
        },
    }
