"""Rollout: judging a shadow or canary against the champion on the serving logs, and moving aliases.

``steps`` is the state machine a controller drives (``start_rollout``, then ``advance``
on every tick); ``analysis`` holds the statistics it relies on.
"""

from __future__ import annotations

from evertrain.rollout.analysis import Check, Verdict, compare, evidence, read_logs
from evertrain.rollout.steps import (
    Decision,
    Rollout,
    abort_rollout,
    advance,
    get_active,
    history,
    make_plan,
    promote_now,
    rollback_now,
    start_rollout,
)

__all__ = [
    "Check",
    "Decision",
    "Rollout",
    "Verdict",
    "abort_rollout",
    "advance",
    "compare",
    "evidence",
    "get_active",
    "history",
    "make_plan",
    "promote_now",
    "read_logs",
    "rollback_now",
    "start_rollout",
]
