"""The one-glance view of every model that ``evertrain status`` prints and the dashboard shows.

Both faces read it from here, so the command line and the page never disagree and the
dashboard needs nothing from the command modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evertrain.store.names import KNOWN_ALIASES

if TYPE_CHECKING:
    from evertrain.store import Store  # the store (and SQLAlchemy) is the caller's to open


def status_data(store: Store, configured: str | None = None) -> dict[str, Any]:
    """The one-glance view of every model; the controller adds decisions and drift to it.

    ``configured`` is the model the project file describes: it is listed even before its
    first version (no aliases, no versions), so ``status`` right after ``init`` shows it.
    """
    from evertrain.faces import status_extras
    from evertrain.faces.status_reads import models_overview

    out = []
    # One read gives every model with its aliases and counts (in name order), so the
    # view costs the same few statements however many models there are.
    overview = models_overview(store)
    if configured is not None and configured not in {m["name"] for m in overview}:
        out.append(
            {
                "name": configured,
                "aliases": dict.fromkeys(KNOWN_ALIASES),
                "n_versions": 0,
                "last_decision": None,
                "last_drift": None,
                "rollout": None,
                "next_cycle_at": None,
            }
        )
    for model in overview:
        entry: dict[str, Any] = {
            "name": model["name"],
            "aliases": model["aliases"],
            "n_versions": model["n_versions"],
        }
        entry.update(status_extras.for_model(store, model["name"]))
        out.append(entry)
    return {"models": out}
