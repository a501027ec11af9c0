"""What one cycle came to, as a task runner reads it: an outcome, an exit code, a reason.

``evertrain run --once --json`` is a task for a scheduler (Airflow, Prefect, Kubeflow
Pipelines, cron, a CI job). A scheduler acts on the exit code alone, so the code says
what kind of thing happened and whether trying again can help:

====  =====================================================================
0     nothing to do, or done: no retrain was due, a version was trained and
      promoted or put in canary, a rollout moved on, or another controller
      holds the lease and does the work
1     a gate or a rollout said no: the challenger failed its gates, or the
      canary was rolled back (the loop worked; the model did not pass)
2     usage or data error: the project file, an argument or the data is
      wrong; trying again without a fix gives the same answer
3     infrastructure error: the store, storage, a training worker or an
      unforeseen failure; trying again later may succeed (the cycle resumes)
====  =====================================================================

The controller records a failed step with the ``code`` of its error (see
:mod:`evertrain.exceptions`); :func:`cycle_outcome` maps those codes here, so a live
``evertrain run`` and an orchestrator that calls the steps as its own tasks decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evertrain.exceptions import EvertrainError

OK = 0
SAID_NO = 1
USAGE = 2
INFRASTRUCTURE = 3

#: Error codes that mean a wrong input or project: fixing it, not retrying, helps.
USAGE_CODES = frozenset(
    {"usage", "invalid_name", "spec", "data_validation", "input", "not_found", "auth", "error"}
)
#: Error codes of a check that said no: the loop worked and the model did not pass.
SAID_NO_CODES = frozenset({"gate_failed", "budget_exhausted", "check_failed", "drift_detected"})
#: Everything else (``store``, ``conflict``, ``integrity``, ``training_failed``, ``internal``...)
#: is infrastructure: a later attempt may succeed.

INTERNAL = "internal"
"""The code of a failure that is no evertrain error (a bug, a dependency's error)."""

STEP_ORDER = ("monitor", "decide", "train", "gate", "rollout")


def error_code(exc: BaseException) -> str:
    """The stable code a failed step is recorded with: the evertrain error's, else ``internal``."""
    return exc.code if isinstance(exc, EvertrainError) else INTERNAL


def exit_code_for(code: str) -> int:
    """The task exit code for an error code."""
    if code in USAGE_CODES:
        return USAGE
    if code in SAID_NO_CODES:
        return SAID_NO
    return INFRASTRUCTURE


def error_exit_code(exc: BaseException) -> int:
    """The task exit code for an error raised outside a step (loading the project, opening the store)."""
    return exit_code_for(error_code(exc))


@dataclass(frozen=True)
class Outcome:
    """What a cycle came to: one word, the task exit code and a one-line reason."""

    outcome: str
    exit_code: int
    reason: str
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "version": self.version,
        }


def cycle_outcome(result: dict[str, Any]) -> Outcome:
    """The outcome of one cycle's result (``Controller.cycle``'s dict, step results by name).

    The first failed step decides (a failure stops what depends on it); then a gate or a
    rollout that said no; then what the cycle did, most important first. A cycle paused
    after a step (``paused_after``, an orchestrator's task per step) says what that step
    came to: ``monitored``, ``retrain_due`` after a decision to retrain, else as above.
    """
    if result.get("skipped"):
        return Outcome("skipped", OK, str(result["skipped"]))
    for name in STEP_ORDER:
        step = result.get(name) or {}
        if step.get("status") == "failed" and "error" in step:
            code = str(step.get("error_code") or INTERNAL)
            return Outcome("failed", exit_code_for(code), f"step {name} failed ({code}): {step['error']}")
    if result.get("stopped"):
        return Outcome("stopped", INFRASTRUCTURE, "stopped before its next step; the next run resumes it")
    paused, following = result.get("paused_after"), result.get("next_step")
    decide = result.get("decide") or {}
    if paused == "monitor":
        rows = (result.get("monitor") or {}).get("n_rows")
        seen = f"{rows} served row(s) monitored" if rows is not None else "monitored"
        return Outcome("monitored", OK, f"{seen}; {following} is next")
    if paused == "decide" and decide.get("action") == "retrain":
        why = "; ".join(decide.get("reasons") or []) or "retrain"
        return Outcome("retrain_due", OK, f"{why}; {following} is next")
    gate = result.get("gate") or {}
    rollout = result.get("rollout") or {}
    tested, moved = gate.get("version"), rollout.get("version")
    if gate.get("status") == "failed":
        reason = gate.get("reason") or "it failed its gates"
        return Outcome("gate_failed", SAID_NO, f"version {tested}: {reason}", tested)
    if rollout.get("outcome") == "rolled_back":
        why = "; ".join(rollout.get("reasons") or []) or "the canary was rolled back"
        return Outcome("rolled_back", SAID_NO, f"version {moved}: {why}", moved)
    if rollout.get("outcome") == "promoted":
        return Outcome("promoted", OK, f"version {moved} finished its rollout", moved)
    if gate.get("status") == "passed":
        if gate.get("promoted"):
            return Outcome("promoted", OK, f"version {tested} passed its gates and is the champion", tested)
        phase = gate.get("rollout")
        return Outcome("rollout_started", OK, f"version {tested} passed its gates; in {phase}", tested)
    if rollout.get("action") not in (None, "idle"):
        why = "; ".join(rollout.get("reasons") or []) or str(rollout.get("action"))
        return Outcome("rollout_" + str(rollout["action"]), OK, why, moved)
    held = decide.get("held") or []
    reasons = decide.get("reasons") or []
    if decide.get("action") == "retrain":
        trained = (result.get("train") or {}).get("version")
        return Outcome("trained", OK, "; ".join(reasons) or "retrained", trained)
    why = "; ".join(held) if held else ("; ".join(reasons) or "no trigger fired")
    return Outcome("nothing_to_do", OK, why)


__all__ = [
    "INFRASTRUCTURE",
    "INTERNAL",
    "OK",
    "SAID_NO",
    "USAGE",
    "Outcome",
    "cycle_outcome",
    "error_code",
    "error_exit_code",
    "exit_code_for",
]
