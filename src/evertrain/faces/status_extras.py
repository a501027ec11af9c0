"""Per-model facts for ``evertrain status`` that come from the controller's runs.

The last decision (taken or not, with its reasons), the last drift seen, the rollout
in progress, and when the next cycle is due. Null until the controller has run.

Each is one bounded read (the newest decision, the newest cycle, the live rollout row),
so the status of a store with tens of thousands of runs costs what a new one's does.
"""

from __future__ import annotations

from typing import Any

from evertrain.faces import status_reads as data
from evertrain.store import Store


def rollout_now(store: Store, name: str, last_tick: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The rollout as it stands: the live row (phase, step, share, plan) when there is one.

    Without one, the newest finished rollout with its outcome (so it stays visible until
    the next one starts), else ``last_tick``: the newest cycle's rollout step.
    """
    live, newest = data.rollouts_of(store, name, limit=1)
    tick = dict(last_tick or {})
    if live is None:
        if not newest:
            return tick if tick.get("version") is not None else None
        done = newest[0]
        return {
            "id": done["id"],
            "version": done["version"],
            "baseline": done["baseline"],
            "phase": done["phase"],
            "share": done["share"],
            "started_at": done["created_at"],
            "ended_at": done["ended_at"],
            "action": done["outcome"] or tick.get("action"),
            "reasons": done["reasons"],
            "outcome": done["outcome"],
        }
    steps = live["plan"].get("steps") or []
    verdict = live["last_verdict"] or {}
    return {
        "id": live["id"],
        "version": live["version"],
        "baseline": live["baseline"],
        "phase": live["phase"],
        "step": live["step"],
        "n_steps": len(steps),
        "share": live["share"],
        "step_started_at": live["step_started_at"],
        "started_at": live["created_at"],
        "updated_at": live["updated_at"],
        "action": verdict.get("action") or tick.get("action") or "hold",
        "reasons": live["reasons"],
        "outcome": live["outcome"],
    }


def for_model(store: Store, name: str) -> dict[str, Any]:
    last = data.last_decision(store, name)
    newest = data.newest_cycle(store, name)
    last_drift = None
    next_cycle = None
    tick = None
    if newest is not None:
        params, result = newest
        drift = (result.get("monitor") or {}).get("drift")
        if drift is not None:
            last_drift = {
                "cycle": result.get("cycle"),
                "at": result.get("at"),
                "share_drifted": drift.get("share_drifted"),
                "drifted_columns": drift.get("drifted_columns"),
                "dataset_drift": drift.get("dataset_drift"),
            }
        interval = params.get("interval")
        if interval is not None and result.get("at") is not None:
            next_cycle = float(result["at"]) + float(interval)
        tick = result.get("rollout")
    return {
        "last_decision": last,
        "last_drift": last_drift,
        "rollout": rollout_now(store, name, tick),
        "next_cycle_at": next_cycle,
    }
