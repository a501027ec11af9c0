"""Lineage both ways: version -> snapshots -> sources, and snapshot -> versions.

Also the stored gate reports (evaluations), which lineage shows beside the data a
version was trained and judged on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.exceptions import NotFoundError
from evertrain.store._tx import run_write
from evertrain.store.artifacts import check_digest
from evertrain.store.audit import AuditLog
from evertrain.store.metadata import (
    Database,
    evaluations,
    model_versions,
    models,
    snapshot_sources,
    snapshots,
    version_snapshots,
)
from evertrain.store.registry import Registry


def _base_model(params: dict[str, Any]) -> dict[str, Any]:
    """A LoRA adapter's base model (stored once in the artifact store, named by its manifest's hash)
    and how it was fine-tuned: the settings, on how many workers (DDP ranks) with which backend."""
    if "base_model_sha256" not in params:
        return {}
    return {
        "base_model": {
            "sha256": params["base_model_sha256"],
            "uri": params.get("base_model_uri"),
            "tokenizer_sha256": params.get("tokenizer_sha256"),
        },
        "training": {
            "lora": params.get("lora"),
            "workers": params.get("workers", 1),
            "distributed_backend": params.get("distributed_backend"),
        },
    }


def snapshot_info(conn: Connection, snapshot_id: str) -> dict[str, Any]:
    row = conn.execute(sa.select(snapshots).where(snapshots.c.id == snapshot_id)).first()
    if row is None:
        raise NotFoundError(f"snapshot {snapshot_id} is not recorded")
    sources = conn.execute(
        sa.select(snapshot_sources.c.source)
        .where(snapshot_sources.c.snapshot_id == snapshot_id)
        .order_by(snapshot_sources.c.source)
    ).scalars()
    return {
        "id": row.id,
        "n_rows": row.n_rows,
        "schema": row.schema,
        "time_column": row.time_column,
        "time_min": row.time_min,
        "time_max": row.time_max,
        "size_bytes": row.size_bytes,
        "created_at": row.created_at,
        "sources": list(sources),
    }


class Lineage:
    def __init__(self, db: Database, registry: Registry, audit: AuditLog, clock: Callable[[], float]) -> None:
        self.db = db
        self.registry = registry
        self.audit = audit
        self.clock = clock

    def record_snapshot(
        self,
        snapshot_id: str,
        *,
        n_rows: int,
        schema: dict[str, Any],
        size_bytes: int,
        sources: Iterable[str] = (),
        time_column: str | None = None,
        time_min: float | None = None,
        time_max: float | None = None,
    ) -> dict[str, Any]:
        """Record a frozen table whose bytes are in the artifact store under ``snapshot_id``.

        The id is the sha256 of those bytes, so the same table recorded twice is one
        snapshot: recording it again only adds sources it did not list yet.
        """
        check_digest(snapshot_id)
        if not self.registry.artifacts.exists(snapshot_id):
            raise NotFoundError(f"snapshot {snapshot_id} is not in the artifact store; store its bytes first")
        wanted = sorted(set(sources))

        def work(conn: Connection) -> None:
            found = conn.execute(sa.select(snapshots.c.id).where(snapshots.c.id == snapshot_id)).first()
            if found is None:
                conn.execute(
                    sa.insert(snapshots).values(
                        id=snapshot_id,
                        n_rows=n_rows,
                        schema=schema,
                        time_column=time_column,
                        time_min=time_min,
                        time_max=time_max,
                        size_bytes=size_bytes,
                        created_at=self.clock(),
                    )
                )
            known = set(
                conn.execute(
                    sa.select(snapshot_sources.c.source).where(snapshot_sources.c.snapshot_id == snapshot_id)
                ).scalars()
            )
            for source in wanted:
                if source not in known:
                    conn.execute(sa.insert(snapshot_sources).values(snapshot_id=snapshot_id, source=source))

        run_write(self.db, work)
        with self.db.read() as conn:
            return snapshot_info(conn, snapshot_id)

    def record_evaluation(
        self,
        model: str,
        version: int,
        *,
        passed: bool,
        report: dict[str, Any],
        actor: str,
        champion_version: int | None = None,
        snapshot_id: str | None = None,
    ) -> int:
        """Store a gate report, linked to the version and the holdout, and audit the decision."""

        def work(conn: Connection) -> int:
            version_id = conn.execute(
                sa.select(model_versions.c.id)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(models.c.name == model, model_versions.c.version == version)
            ).scalar()
            if version_id is None:
                raise NotFoundError(f"model {model!r} has no version {version}")
            result = conn.execute(
                sa.insert(evaluations).values(
                    version_id=version_id,
                    champion_version=champion_version,
                    snapshot_id=snapshot_id,
                    passed=passed,
                    report=report,
                    created_at=self.clock(),
                )
            )
            eval_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            self.audit.append(
                conn,
                actor=actor,
                action="gate",
                subject=f"model/{model}/{version}",
                reason="passed" if passed else "failed",
                payload={
                    "evaluation": eval_id,
                    "champion": champion_version,
                    "snapshot": snapshot_id,
                    "passed": passed,
                    "report": report,
                },
            )
            return eval_id

        return run_write(self.db, work)

    def evaluations(self, model: str, version: int) -> list[dict[str, Any]]:
        mv = self.registry.get_version(model, version)
        with self.db.read() as conn:
            version_id = conn.execute(
                sa.select(model_versions.c.id)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(models.c.name == mv.model, model_versions.c.version == mv.version)
            ).scalar()
            rows = conn.execute(
                sa.select(evaluations)
                .where(evaluations.c.version_id == version_id)
                .order_by(evaluations.c.id)
            ).all()
        return [
            {
                "id": r.id,
                "champion_version": r.champion_version,
                "snapshot": r.snapshot_id,
                "passed": bool(r.passed),
                "report": r.report,
                "created_at": r.created_at,
            }
            for r in rows
        ]

    def of_version(self, model: str, version: int | str) -> dict[str, Any]:
        """What a version came from: its snapshots with their sources, parent chain, trigger, gates."""
        mv = self.registry.get_version(model, version)
        with self.db.read() as conn:
            snaps = [dict(snapshot_info(conn, s["id"]), role=s["role"]) for s in mv.snapshots]
        ancestors: list[int] = []
        parent = mv.parent
        while parent is not None and parent not in ancestors:
            ancestors.append(parent)
            parent = self.registry.get_version(model, parent).parent
        return {
            "model": mv.model,
            "version": mv.version,
            "artifact_sha256": mv.artifact_sha256,
            "framework": mv.framework,
            "code_version": mv.code_version,
            "snapshots": snaps,
            "parent": mv.parent,
            "ancestors": ancestors,
            "trigger": mv.trigger,
            "created_at": mv.created_at,
            "created_by": mv.created_by,
            "gates": self.evaluations(model, mv.version),
            **_base_model(mv.params),
        }

    def of_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """Every version trained or evaluated on a snapshot."""
        with self.db.read() as conn:
            info = snapshot_info(conn, snapshot_id)
            linked = conn.execute(
                sa.select(models.c.name, model_versions.c.version, version_snapshots.c.role)
                .join(model_versions, model_versions.c.id == version_snapshots.c.version_id)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(version_snapshots.c.snapshot_id == snapshot_id)
            ).all()
            judged = conn.execute(
                sa.select(models.c.name, model_versions.c.version)
                .join(model_versions, model_versions.c.id == evaluations.c.version_id)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(evaluations.c.snapshot_id == snapshot_id)
            ).all()
        uses = {(r.name, r.version, r.role) for r in linked} | {(r.name, r.version, "eval") for r in judged}
        info["versions"] = [{"model": m, "version": v, "role": role} for m, v, role in sorted(uses)]
        return info
