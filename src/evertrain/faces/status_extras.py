"""Per-model facts for ``evertrain status`` that come from parts beyond the registry.

The controller records decisions and drift; until a model has any, these are null.
"""

from __future__ import annotations

from typing import Any

from evertrain.store import Store


def for_model(store: Store, name: str) -> dict[str, Any]:
    decisions = store.runs.list(model=name, kind="decision")
    last = decisions[-1] if decisions else None
    return {
        "last_decision": None if last is None else dict(last.result or {}, at=last.created_at),
        "last_drift": None,
    }
