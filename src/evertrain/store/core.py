"""The ``Store``: metadata database and artifact store, with the registry, lineage, runs and audit log."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from evertrain import settings
from evertrain.store.artifacts import ArtifactStore
from evertrain.store.audit import AuditLog
from evertrain.store.lineage import Lineage
from evertrain.store.metadata import Database
from evertrain.store.registry import Registry
from evertrain.store.runs import Runs
from evertrain.store.specs import Specs


class Store:
    """Metadata database + artifact store, with the registry, lineage, runs and audit log over them."""

    def __init__(
        self,
        db_url: str,
        artifacts_url: str,
        *,
        logs_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = Database(db_url)
        self.artifacts = ArtifactStore(artifacts_url)
        self.logs_url = logs_url
        self.clock = clock
        self.audit = AuditLog(self.db, clock)
        self.registry = Registry(self.db, self.artifacts, self.audit, clock)
        self.lineage = Lineage(self.db, self.registry, self.audit, clock)
        self.runs = Runs(self.db, clock)
        self.specs = Specs(self.runs, self.artifacts)

    @classmethod
    def for_project(cls, project: Path | str, *, clock: Callable[[], float] = time.time) -> Store:
        """The store of a project folder, honouring ``EVERTRAIN_DB_URL`` and ``EVERTRAIN_ARTIFACTS_URL``."""
        project = Path(project)
        return cls(
            settings.db_url(project),
            settings.artifacts_url(project),
            logs_url=settings.logs_url(project),
            clock=clock,
        )

    def open(self) -> Store:
        """Bring the metadata schema up to date (creating it on first open)."""
        self.db.migrate()
        return self

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
