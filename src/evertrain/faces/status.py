"""The one-glance view of every model that ``evertrain status`` prints and the dashboard shows.

Both faces read it from here, so the command line and the page never disagree and the
dashboard needs nothing from the command modules.
"""

from __future__ import annotations

from typing import Any

from evertrain.store import Store
from evertrain.store.names import KNOWN_ALIASES


def status_data(store: Store) -> dict[str, Any]:
    """The one-glance view of every model; the controller adds decisions and drift to it."""
    from evertrain.faces import status_extras

    out = []
    for name in store.registry.list_models():
        held = store.registry.get_aliases(name)
        aliases = {a: held.get(a) for a in KNOWN_ALIASES}
        entry: dict[str, Any] = {
            "name": name,
            "aliases": aliases,
            "n_versions": len(store.registry.list_versions(name)),
        }
        entry.update(status_extras.for_model(store, name))
        out.append(entry)
    return {"models": out}
