"""Rollout: judging a shadow or canary against the champion on the serving logs, and moving aliases.

``commands`` holds what a controller and an operator call (``start_rollout``, then
``advance`` on every tick; ``abort_rollout``, ``promote_now``, ``rollback_now``);
``state`` the stored record; ``machine`` the transitions of each phase; ``evidence``
reads a window of the serving logs and ``analysis`` holds the statistics judged on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evertrain._lazy import lazy_exports

# Name -> the module that defines it, imported on first use: reading the stored state of a
# rollout (``status``, the dashboard, the report) needs no statistics, logs or pandas.
_LAZY = {
    "Check": "evertrain.rollout.analysis",
    "Verdict": "evertrain.rollout.analysis",
    "compare": "evertrain.rollout.analysis",
    "abort_rollout": "evertrain.rollout.commands",
    "advance": "evertrain.rollout.commands",
    "promote_now": "evertrain.rollout.commands",
    "rollback_now": "evertrain.rollout.commands",
    "start_rollout": "evertrain.rollout.commands",
    "evidence": "evertrain.rollout.evidence",
    "read_logs": "evertrain.rollout.evidence",
    "Decision": "evertrain.rollout.state",
    "Rollout": "evertrain.rollout.state",
    "get_active": "evertrain.rollout.state",
    "history": "evertrain.rollout.state",
    "make_plan": "evertrain.rollout.state",
}

if TYPE_CHECKING:
    from evertrain.rollout.analysis import Check, Verdict, compare
    from evertrain.rollout.commands import abort_rollout, advance, promote_now, rollback_now, start_rollout
    from evertrain.rollout.evidence import evidence, read_logs
    from evertrain.rollout.state import Decision, Rollout, get_active, history, make_plan

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

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
