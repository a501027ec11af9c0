"""The store: the only thing the parts of evertrain share.

Metadata in SQL (SQLite by default, PostgreSQL by URL), blobs in a content-addressed
artifact store (any fsspec URL), a registry of versions and aliases, lineage, runs,
and the hash-chained audit log.

>>> import tempfile, pathlib
>>> from evertrain.store import Store
>>> store = Store.for_project(pathlib.Path(tempfile.mkdtemp())).open()
>>> store.registry.list_models()
[]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evertrain._lazy import lazy_exports

if TYPE_CHECKING:
    from evertrain.store.artifacts import ArtifactStore
    from evertrain.store.audit import AuditLog
    from evertrain.store.core import Store
    from evertrain.store.lineage import Lineage
    from evertrain.store.metadata import Database
    from evertrain.store.registry import ModelVersion, Registry
    from evertrain.store.runs import Run, Runs

#: Imported on first use, so that code needing only the model formats or the artifact
#: hashes (a training worker) does not pay for SQLAlchemy.
_LAZY = {
    "ArtifactStore": "evertrain.store.artifacts",
    "AuditLog": "evertrain.store.audit",
    "Database": "evertrain.store.metadata",
    "Lineage": "evertrain.store.lineage",
    "ModelVersion": "evertrain.store.registry",
    "Registry": "evertrain.store.registry",
    "Run": "evertrain.store.runs",
    "Runs": "evertrain.store.runs",
    "Store": "evertrain.store.core",
}

__all__ = [
    "ArtifactStore",
    "AuditLog",
    "Database",
    "Lineage",
    "ModelVersion",
    "Registry",
    "Run",
    "Runs",
    "Store",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
