"""Baselines of a backtest: the same batches, trainer and window, no monitoring, no gates.

Each baseline starts from a first model trained on the warm batches and retrains when its
:class:`RetrainRule` says so: :class:`Never`, :class:`Every` N batches, or any rule a
caller passes in (the benchmark adds one that retrains when River's ADWIN fires on the
error stream). They show what the loop's triggers, gates and rollouts are worth against
plain schedules on the same history.

>>> Every(2).observe(0, np.zeros(3)), Every(1).observe(0, np.zeros(3))
(None, 'schedule: every 1 batches')
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evertrain.controller.backtest_spec import EVENT_TIME, LABEL_TIME
from evertrain.controller.replay import BatchSource, Replay
from evertrain.data.windows import make_window
from evertrain.evaluate.scoring import model_frame, wants_categories
from evertrain.exceptions import UsageError
from evertrain.spec import Spec
from evertrain.train.stages import DEFAULT_NUM_THREADS
from evertrain.train.trainers import TrainContext, get_trainer


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


@dataclass
class Timeline:
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
        num_threads=int(spec.model.trainer.params.get("num_threads") or DEFAULT_NUM_THREADS),
        log=lambda _line: None,
    )
    began = time.perf_counter()
    model = trainer.fit(window.train, window.valid, context)
    return _Fitted(model, window.columns.features), time.perf_counter() - began


def _predict(fitted: _Fitted, frame: pd.DataFrame) -> np.ndarray:
    X = model_frame(frame, fitted.features, categorical_as_category=wants_categories(fitted.model))
    return np.asarray(fitted.model.predict(X), dtype=float)


def batch_score(task: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of right predictions (classification) or R^2 (regression)."""
    if task == "regression":
        total = float(np.sum((labels - labels.mean()) ** 2))
        return 1.0 - float(np.sum((labels - predictions) ** 2)) / total if total > 0 else 0.0
    return float(np.mean(predictions == labels))


def run_baselines(
    spec: Spec,
    source: BatchSource,
    timeline: Timeline,
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
            score = batch_score(task, predictions, labels)
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
