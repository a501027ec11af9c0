"""Runs: every training, evaluation, cycle and step, failed ones included.

A run may carry a ``key``; starting a run whose key exists returns the existing run,
which is how a restarted step finds the work it had begun.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.exceptions import NotFoundError, UsageError
from evertrain.store._tx import run_write
from evertrain.store.metadata import Database, models, runs
from evertrain.store.names import check_model_name

RUN_STATES = ("running", "succeeded", "failed")


@dataclass(frozen=True)
class Run:
    id: str
    key: str | None
    kind: str
    model: str | None
    parent_id: str | None
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Runs:
    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def start(
        self,
        kind: str,
        *,
        model: str | None = None,
        key: str | None = None,
        params: dict[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> Run:
        if model is not None:
            check_model_name(model)

        def work(conn: Connection) -> str:
            if key is not None:
                found = conn.execute(sa.select(runs.c.id).where(runs.c.key == key)).scalar()
                if found is not None:
                    return str(found)
            model_id = None
            if model is not None:
                model_id = conn.execute(sa.select(models.c.id).where(models.c.name == model)).scalar()
                if model_id is None:
                    model_id = conn.execute(
                        sa.insert(models).values(name=model, created_at=self.clock())
                    ).inserted_primary_key[0]  # type: ignore[index]
            run_id = uuid.uuid4().hex
            now = self.clock()
            conn.execute(
                sa.insert(runs).values(
                    id=run_id,
                    key=key,
                    kind=kind,
                    model_id=model_id,
                    parent_id=parent_id,
                    status="running",
                    params=params or {},
                    metrics={},
                    created_at=now,
                    started_at=now,
                    heartbeat_at=now,
                )
            )
            return run_id

        return self.get(run_write(self.db, work))

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        metrics: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End a run as ``succeeded`` or ``failed`` with what it measured and produced (read it
        back with :meth:`get`; not read here, since most callers are done with it)."""
        if status not in RUN_STATES[1:]:
            raise UsageError(f"a run ends as succeeded or failed, not {status!r}")

        def work(conn: Connection) -> None:
            values: dict[str, Any] = {"status": status, "ended_at": self.clock(), "error": error}
            if metrics is not None:
                values["metrics"] = metrics
            if result is not None:
                values["result"] = result
            updated = conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
            if updated.rowcount != 1:
                raise NotFoundError(f"run {run_id} does not exist")

        run_write(self.db, work)

    def get(self, run_id: str) -> Run:
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(runs, models.c.name.label("model_name"))
                .select_from(runs.outerjoin(models, models.c.id == runs.c.model_id))
                .where(runs.c.id == run_id)
            ).first()
        if row is None:
            raise NotFoundError(f"run {run_id} does not exist")
        return self._run(row)

    def find(self, key: str) -> Run | None:
        with self.db.read() as conn:
            found = conn.execute(sa.select(runs.c.id).where(runs.c.key == key)).scalar()
        return None if found is None else self.get(str(found))

    def list(
        self,
        model: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        created_since: float | None = None,
    ) -> list[Run]:
        """Runs in the order they were created, of ``model``, ``kind`` and ``status`` and created
        at or after ``created_since`` where those are given."""
        query = sa.select(runs, models.c.name.label("model_name")).select_from(
            runs.outerjoin(models, models.c.id == runs.c.model_id)
        )
        if model is not None:
            query = query.where(models.c.name == model)
        if kind is not None:
            query = query.where(runs.c.kind == kind)
        if status is not None:
            query = query.where(runs.c.status == status)
        if created_since is not None:
            query = query.where(runs.c.created_at >= created_since)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(runs.c.created_at, runs.c.id)).all()
        return [self._run(r) for r in rows]

    def keys(self, model: str, kind: str, status: str | None = None) -> tuple[str, ...]:
        """The keys of ``model``'s keyed runs of ``kind`` (of ``status`` where given), and
        nothing else of them: a controller finds its newest cycle by number among thousands
        without reading each cycle's record."""
        query = (
            sa.select(runs.c.key)
            .select_from(runs.join(models, models.c.id == runs.c.model_id))
            .where(models.c.name == model, runs.c.kind == kind, runs.c.key.is_not(None))
        )
        if status is not None:
            query = query.where(runs.c.status == status)
        with self.db.read() as conn:
            return tuple(str(k) for k in conn.execute(query).scalars())

    @staticmethod
    def _run(row: Any) -> Run:
        return Run(
            id=row.id,
            key=row.key,
            kind=row.kind,
            model=row.model_name,
            parent_id=row.parent_id,
            status=row.status,
            params=dict(row.params or {}),
            metrics=dict(row.metrics or {}),
            result=row.result,
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
        )
