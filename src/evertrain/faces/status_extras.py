"""Per-model facts for ``evertrain status`` that come from the controller's runs.

The last decision (taken or not, with its reasons), the last drift seen, the rollout
in progress, and when the next cycle is due. Null until the controller has run.
"""

from __future__ import annotations

from typing import Any

from evertrain.store import Store


def for_model(store: Store, name: str) -> dict[str, Any]:
    decisions = store.runs.list(model=name, kind="decision")
    last = decisions[-1] if decisions else None
    cycles = [r for r in store.runs.list(model=name, kind="cycle") if r.status == "succeeded" and r.result]
    newest = max(cycles, key=lambda r: int(r.params.get("cycle", 0))) if cycles else None
    last_drift = None
    next_cycle = None
    rollout = None
    if newest is not None:
        result = newest.result or {}
        drift = (result.get("monitor") or {}).get("drift")
        if drift is not None:
            last_drift = {
                "cycle": result.get("cycle"),
                "at": result.get("at"),
                "share_drifted": drift.get("share_drifted"),
                "drifted_columns": drift.get("drifted_columns"),
                "dataset_drift": drift.get("dataset_drift"),
            }
        interval = (newest.params or {}).get("interval")
        if interval is not None and result.get("at") is not None:
            next_cycle = float(result["at"]) + float(interval)
        rollout = result.get("rollout")
    return {
        "last_decision": None if last is None else dict(last.result or {}, at=last.created_at),
        "last_drift": last_drift,
        "rollout": rollout,
        "next_cycle_at": next_cycle,
    }
