"""Rollout: judging a shadow or canary against the champion on the serving logs, and moving aliases.

``commands`` holds what a controller and an operator call (``start_rollout``, then
``advance`` on every tick; ``abort_rollout``, ``promote_now``, ``rollback_now``);
``state`` the stored record; ``machine`` the transitions of each phase; ``evidence``
reads a window of the serving logs and ``analysis`` holds the statistics judged on it.
"""

from __future__ import annotations

from evertrain.rollout.analysis import Check, Verdict, compare
from evertrain.rollout.commands import abort_rollout, advance, promote_now, rollback_now, start_rollout
from evertrain.rollout.evidence import evidence, read_logs
from evertrain.rollout.state import Decision, Rollout, get_active, history, make_plan

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
