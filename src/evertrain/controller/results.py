"""The shapes of what the controller's steps return and what a cycle or a backtest records.

The loop stores each step's result as plain JSON in its run, and the faces read them
back from there or from a backtest's record, so these are ``TypedDict``s: the shapes
written down and checked by mypy, while the values stay plain dicts (the JSON does not
change). Every key of a step result is optional to the type: a step that raised is
stored as ``{"status": "failed", "error": message, "error_code": code}``, and skipped steps
carry only their status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from evertrain.evaluate.gates import CheckDict


class DriftSummary(TypedDict):
    """The monitor's digest of the drift report (DESIGN.md's drift JSON, columns trimmed)."""

    share_drifted: float
    drifted_columns: list[str]
    dataset_drift: bool
    columns: dict[str, dict[str, Any]]


class RealizedPerformance(TypedDict):
    """The champion's metric on its own labelled traffic, and its training baseline."""

    metric: str
    value: float | None
    n_labels: int
    baseline: float | None
    baseline_rows: int | None  # holdout rows the baseline was measured on
    # the champion's metric on its first labelled rows in service ({"value", "rows"}): the
    # policy pools it with the holdout baseline (see evertrain.controller.policy.reference)
    first_served: dict[str, Any] | None
    since: float | None  # event time of the oldest labelled row behind ``value``
    parts: list[float | None]  # ``value`` on consecutive parts of the same rows, oldest first


class StepError(TypedDict, total=False):
    error: str  # set when the step raised (any exception), with ``status`` "failed"
    error_code: str  # the error's stable code (``store``, ``data_validation``...; ``internal``)
    cooldown: str  # on a failed training: that it does not count toward the cooldown


class MonitorResult(StepError, total=False):
    status: str  # "ok" or "no champion"
    champion: int
    n_rows: int
    window: list[float | None]  # [since, at]
    reference: str  # the training snapshot drift was measured against
    drift: DriftSummary
    text_drift: dict[str, Any]  # per text column: its length, unknown-token and domain tests
    labels_after_onset: int
    metric_after_onset: float | None
    realized: RealizedPerformance
    estimated: dict[str, Any] | None  # a label-free estimate with its baseline
    new_labelled_rows: int
    rollout: int | None  # the version in shadow or canary, if any
    # the champion's training window and the labelled rows since ({"rows", "cutoff", "new_labelled_rows"})
    champion_data: dict[str, Any] | None


class DecideResult(StepError, total=False):
    action: str  # "retrain" or "none"
    reasons: list[str]
    held: list[str]  # what would have triggered but was held back (cooldown, budget...)
    triggers: list[str]
    since: float | None  # learn from here on (drift onset or decay)
    history: dict[str, Any]  # the policy history after this decision


class TrainStepResult(StepError, total=False):
    status: str  # "trained" or "skipped"
    version: int | None
    run: str
    seconds: float
    metrics: dict[str, Any]
    history: dict[str, Any]


class GateStepResult(StepError, total=False):
    status: str  # "passed", "failed" or "skipped"
    version: int
    champion: int | None
    reason: str | None
    checks: list[CheckDict]
    promoted: bool
    rollout: str | None  # the phase a started rollout is in
    second_look: dict[str, Any]  # a kept challenger judged again: its look, rows, needed, dropped
    history: dict[str, Any]


class RolloutStepResult(StepError, total=False):
    action: str  # "idle", "hold", "advance", "promote", "rollback", "complete", "abort", "none"
    reasons: list[str]
    version: int | None
    phase: str | None
    share: float | None
    outcome: str | None  # "promoted" or "rolled_back" when the rollout ended this tick


class CycleSummary(TypedDict, total=False):
    """What ``Controller.cycle`` returns and stores: the step results under their names."""

    cycle: int | None  # None when another controller holds the lease
    at: float
    skipped: str  # why no cycle ran
    stopped: bool  # a stop was requested between steps
    monitor: MonitorResult
    decide: DecideResult
    train: TrainStepResult
    gate: GateStepResult
    rollout: RolloutStepResult
    history: dict[str, Any]


class BacktestBatch(TypedDict, total=False):
    index: int
    accuracy: float | None  # R^2 for regression
    model_version: int | None
    canary: int | None
    drifted: list[str]
    decision: str | None
    held: list[str]


class BacktestRetrain(TypedDict, total=False):
    batch: int
    reason: str
    triggers: list[str]
    version: int | None
    train_rows: int | None
    # the training set chosen among the candidates: "window" when there was one choice,
    # "since_change" or "upweighted", or "version N" for an earlier champion reinstated
    training_set: str | None
    gates: str | None
    gate_reason: str | None
    train_seconds: float


class BacktestMove(TypedDict, total=False):
    """A promotion, or with ``from`` and ``reasons`` a rollback."""

    batch: int
    version: int | None
    reasons: list[str]


class BaselineResult(TypedDict, total=False):
    batches: list[dict[str, Any]]
    retrains: list[dict[str, Any]]
    mean_accuracy: float | None
    n_retrains: int
    train_seconds: float


class BacktestResult(TypedDict, total=False):
    """``evertrain backtest --json`` (DESIGN.md's least fields and more)."""

    initial: dict[str, Any]
    batches: list[BacktestBatch]
    retrains: list[BacktestRetrain]
    promotions: list[BacktestMove]
    rollbacks: list[BacktestMove]
    mean_accuracy: float | None
    n_retrains: int
    train_seconds: float
    baselines: dict[str, BaselineResult]
    settings: dict[str, Any]


__all__ = [
    "BacktestBatch",
    "BacktestMove",
    "BacktestResult",
    "BacktestRetrain",
    "BaselineResult",
    "CycleSummary",
    "DecideResult",
    "DriftSummary",
    "GateStepResult",
    "MonitorResult",
    "RealizedPerformance",
    "RolloutStepResult",
    "StepError",
    "TrainStepResult",
]
