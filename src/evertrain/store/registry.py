"""The model registry: models, versions and aliases moved by compare-and-swap.

A version is immutable once registered: artifact hash, framework, params, metrics,
the snapshots it was trained and evaluated on, code version, parent and trigger.
Aliases (``champion``, ``challenger``, ``canary``, ``shadow``) are moved only by
compare-and-swap: the caller says which version it expects the alias to hold, and
the move happens only if it still does. Every attempt, won or lost, is written to
``alias_history``; every applied move also goes to the audit log, in the same
transaction as the move itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.exceptions import ConflictError, NotFoundError, UsageError
from evertrain.store._tx import run_write
from evertrain.store.artifacts import ArtifactStore, check_digest
from evertrain.store.audit import AuditLog
from evertrain.store.metadata import (
    Database,
    alias_history,
    aliases,
    model_versions,
    models,
    version_snapshots,
)
from evertrain.store.metadata import snapshots as snapshots_table
from evertrain.store.names import check_alias, check_model_name, parse_version


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
CHAMPION = "champion"
SNAPSHOT_ROLES = ("train", "valid", "holdout", "golden", "eval")


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    artifact_sha256: str
    size_bytes: int
    framework: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    code_version: str | None
    parent: int | None
    trigger: str | None
    run_id: str | None
    created_at: float
    created_by: str
    snapshots: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "artifact_sha256": self.artifact_sha256,
            "size_bytes": self.size_bytes,
            "framework": self.framework,
            "params": self.params,
            "metrics": self.metrics,
            "code_version": self.code_version,
            "parent": self.parent,
            "trigger": self.trigger,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "snapshots": self.snapshots,
            "snapshot": next((s["id"] for s in self.snapshots if s["role"] == "train"), None),
        }


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    expected_version: int | None
    outcome: str
    action: str
    actor: str
    reason: str | None
    at: float


class Registry:
    def __init__(
        self, db: Database, artifacts: ArtifactStore, audit: AuditLog, clock: Callable[[], float]
    ) -> None:
        self.db = db
        self.artifacts = artifacts
        self.audit = audit
        self.clock = clock

    # -- models and versions -------------------------------------------------------------

    def _model_id(self, conn: Connection, name: str, *, create: bool = False, lock: bool = False) -> int:
        query = sa.select(models.c.id).where(models.c.name == name)
        if lock:
            query = query.with_for_update()
        found = conn.execute(query).scalar()
        if found is not None:
            return int(found)
        if not create:
            raise NotFoundError(f"model {name!r} is not registered")
        result = conn.execute(sa.insert(models).values(name=name, created_at=self.clock()))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def register(
        self,
        name: str,
        artifact_sha256: str,
        *,
        framework: str,
        actor: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        snapshots: Iterable[tuple[str, str]] = (),
        parent: int | None = None,
        trigger: str | None = None,
        code_version: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> ModelVersion:
        """Register a new version whose artifact is already in the artifact store.

        With ``run_id``, registering is idempotent: a run that was killed after it
        registered and is then run again gets the version it made, not a second one.
        """
        check_model_name(name)
        check_digest(artifact_sha256)
        if not framework or not isinstance(framework, str):
            raise UsageError(f"framework must be a non-empty string, got {framework!r}")
        links = [(str(sid), str(role)) for sid, role in snapshots]
        for _, role in links:
            if role not in SNAPSHOT_ROLES:
                raise UsageError(f"snapshot role {role!r} is not one of {', '.join(SNAPSHOT_ROLES)}")
        if parent is not None:
            parent = parse_version(parent)
        if not self.artifacts.exists(artifact_sha256):
            raise NotFoundError(f"artifact {artifact_sha256} is not in the artifact store; store it first")
        size = len(self.artifacts.get(artifact_sha256))
        params_d, metrics_d = dict(params or {}), dict(metrics or {})

        def work(conn: Connection) -> ModelVersion:
            model_id = self._model_id(conn, name, create=True, lock=True)
            if run_id is not None:
                existing = conn.execute(
                    sa.select(model_versions.c.version).where(
                        model_versions.c.model_id == model_id, model_versions.c.run_id == run_id
                    )
                ).scalar()
                if existing is not None:
                    return self._version(conn, name, int(existing))
            if parent is not None:
                self._require_version(conn, model_id, name, parent)
            for sid, _ in links:
                if conn.execute(sa.select(snapshots_table.c.id).where(snapshots_table.c.id == sid)).first() is None:
                    raise NotFoundError(f"snapshot {sid} is not recorded; snapshot the data before registering")
            latest = conn.execute(
                sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.model_id == model_id)
            ).scalar()
            version = int(latest or 0) + 1
            now = self.clock()
            result = conn.execute(
                sa.insert(model_versions).values(
                    model_id=model_id,
                    version=version,
                    artifact_sha256=artifact_sha256,
                    size_bytes=size,
                    framework=framework,
                    params=params_d,
                    metrics=metrics_d,
                    code_version=code_version,
                    parent_version=parent,
                    trigger=trigger,
                    run_id=run_id,
                    created_at=now,
                    created_by=actor,
                )
            )
            version_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            for sid, role in dict.fromkeys(links):
                conn.execute(sa.insert(version_snapshots).values(version_id=version_id, snapshot_id=sid, role=role))
            self.audit.append(
                conn,
                actor=actor,
                action="register",
                subject=f"model/{name}/{version}",
                reason=reason,
                payload={
                    "artifact_sha256": artifact_sha256,
                    "framework": framework,
                    "metrics": metrics_d,
                    "parent": parent,
                    "trigger": trigger,
                    "snapshots": [{"id": s, "role": r} for s, r in links],
                    "code_version": code_version,
                },
            )
            return self._version(conn, name, version)

        return run_write(self.db, work)

    def _require_version(self, conn: Connection, model_id: int, name: str, version: int) -> int:
        found = conn.execute(
            sa.select(model_versions.c.id).where(
                model_versions.c.model_id == model_id, model_versions.c.version == version
            )
        ).scalar()
        if found is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        return int(found)

    def _version(self, conn: Connection, name: str, version: int) -> ModelVersion:
        row = conn.execute(
            sa.select(model_versions)
            .join(models, models.c.id == model_versions.c.model_id)
            .where(models.c.name == name, model_versions.c.version == version)
        ).first()
        if row is None:
            if conn.execute(sa.select(models.c.id).where(models.c.name == name)).first() is None:
                raise NotFoundError(f"model {name!r} is not registered")
            raise NotFoundError(f"model {name!r} has no version {version}")
        links = conn.execute(
            sa.select(version_snapshots.c.snapshot_id, version_snapshots.c.role)
            .where(version_snapshots.c.version_id == row.id)
            .order_by(version_snapshots.c.role, version_snapshots.c.snapshot_id)
        ).all()
        return ModelVersion(
            model=name,
            version=row.version,
            artifact_sha256=row.artifact_sha256,
            size_bytes=row.size_bytes,
            framework=row.framework,
            params=dict(row.params or {}),
            metrics=dict(row.metrics or {}),
            code_version=row.code_version,
            parent=row.parent_version,
            trigger=row.trigger,
            run_id=row.run_id,
            created_at=row.created_at,
            created_by=row.created_by,
            snapshots=[{"id": s, "role": r} for s, r in links],
        )

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        check_model_name(name)
        number = parse_version(version)
        with self.db.read() as conn:
            return self._version(conn, name, number)

    def resolve(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number or by alias (``champion``, ``canary``...)."""
        if isinstance(ref, str) and not ref.isdigit():
            version = self.get_alias(name, check_alias(ref))
            if version is None:
                raise NotFoundError(f"model {name!r} has no {ref} alias set")
            return self.get_version(name, version)
        return self.get_version(name, ref)

    def list_models(self) -> list[str]:
        with self.db.read() as conn:
            return [r[0] for r in conn.execute(sa.select(models.c.name).order_by(models.c.name))]

    def list_versions(self, name: str) -> list[ModelVersion]:
        check_model_name(name)
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            numbers = conn.execute(
                sa.select(model_versions.c.version)
                .where(model_versions.c.model_id == model_id)
                .order_by(model_versions.c.version)
            ).scalars()
            return [self._version(conn, name, int(v)) for v in numbers]

    def load_artifact(self, mv: ModelVersion) -> bytes:
        """The model's bytes, only if they hash to what the registry holds for it."""
        return self.artifacts.get(mv.artifact_sha256)

    # -- aliases ------------------------------------------------------------------------

    def get_alias(self, name: str, alias: str) -> int | None:
        return self.get_aliases(name).get(check_alias(alias))

    def get_aliases(self, name: str) -> dict[str, int | None]:
        check_model_name(name)
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            rows = conn.execute(
                sa.select(aliases.c.alias, aliases.c.version).where(aliases.c.model_id == model_id)
            ).all()
        return {r.alias: r.version for r in rows}

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | str | None,
        *,
        actor: str,
        expected: int | None | _Unset = UNSET,
        reason: str | None = None,
        action: str = "set_alias",
        also_clear: Iterable[str] = (),
    ) -> AliasMove:
        """Point ``alias`` at ``version`` (``None`` clears it) if it still holds ``expected``.

        Without ``expected`` the alias is compared with what it held when this call read
        it, which still refuses to overwrite a move that another process made meanwhile.
        ``also_clear`` names aliases that are cleared in the same transaction (promoting
        a canary clears ``canary``). A lost race raises :class:`ConflictError` after the
        attempt is written to the alias history.
        """
        check_model_name(name)
        check_alias(alias)
        target = None if version is None else parse_version(version)
        if expected is not UNSET and expected is not None:
            expected = parse_version(expected)  # type: ignore[arg-type]
        clear = [check_alias(a) for a in also_clear if a != alias]
        if expected is UNSET:
            with self.db.read() as conn:
                expected = self._alias_row(conn, self._model_id(conn, name), alias)[0]
        want: int | None = expected  # type: ignore[assignment]

        def work(conn: Connection) -> AliasMove:
            model_id = self._model_id(conn, name, lock=True)
            if target is not None:
                self._require_version(conn, model_id, name, target)
            current, revision = self._alias_row(conn, model_id, alias, lock=True)
            now = self.clock()
            if current != want:
                move = AliasMove(name, alias, current, target, want, "conflict", action, actor, reason, now)
                self._history(conn, model_id, move)
                return move
            self._write_alias(conn, model_id, alias, target, revision, now)
            move = AliasMove(name, alias, current, target, want, "applied", action, actor, reason, now)
            self._history(conn, model_id, move)
            cleared = {}
            for other in clear:
                held, other_rev = self._alias_row(conn, model_id, other, lock=True)
                if held is not None:
                    self._write_alias(conn, model_id, other, None, other_rev, now)
                    self._history(
                        conn,
                        model_id,
                        AliasMove(name, other, held, None, held, "applied", action, actor, reason, now),
                    )
                    cleared[other] = held
            self.audit.append(
                conn,
                actor=actor,
                action=action,
                subject=f"model/{name}/alias/{alias}",
                reason=reason,
                payload={"alias": alias, "from": current, "to": target, "cleared": cleared},
            )
            return move

        move = run_write(self.db, work)
        if move.outcome == "conflict":
            raise ConflictError(
                f"model {name!r}: {alias} holds version {move.from_version}, not the expected "
                f"{move.expected_version}; another process moved it first (nothing changed)"
            )
        return move

    def promote(
        self,
        name: str,
        version: int | str,
        *,
        actor: str,
        expected: int | None | _Unset = UNSET,
        reason: str | None = None,
    ) -> AliasMove:
        """Make ``version`` the champion; a canary, challenger or shadow alias on it is cleared."""
        number = parse_version(version)
        held = {a: v for a, v in self.get_aliases(name).items() if v == number and a != CHAMPION}
        return self.set_alias(
            name,
            CHAMPION,
            number,
            actor=actor,
            expected=expected,
            reason=reason,
            action="promote",
            also_clear=held,
        )

    def champion_stack(self, name: str) -> list[int]:
        """Champions in the order they were promoted, rolled-back ones removed; the last is current."""
        stack: list[int] = []
        for move in self.history(name, CHAMPION):
            if move.outcome != "applied":
                continue
            if move.action == "rollback":
                if stack:
                    stack.pop()
                if move.to_version is not None and (not stack or stack[-1] != move.to_version):
                    stack.append(move.to_version)
            elif move.to_version is None:
                stack.clear()
            else:
                stack.append(move.to_version)
        return stack

    def rollback(self, name: str, *, actor: str, reason: str | None = None) -> AliasMove:
        """Point the champion back at the champion before it, in one atomic alias move."""
        stack = self.champion_stack(name)
        current = self.get_alias(name, CHAMPION)
        if current is None:
            raise UsageError(f"model {name!r} has no champion to roll back")
        if len(stack) < 2 or stack[-1] != current:
            raise UsageError(f"model {name!r}: champion {current} has no earlier champion to roll back to")
        return self.set_alias(
            name, CHAMPION, stack[-2], actor=actor, expected=current, reason=reason, action="rollback"
        )

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        check_model_name(name)
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            query = sa.select(alias_history).where(alias_history.c.model_id == model_id)
            if alias is not None:
                query = query.where(alias_history.c.alias == check_alias(alias))
            rows = conn.execute(query.order_by(alias_history.c.id)).all()
        return [
            AliasMove(
                name,
                r.alias,
                r.from_version,
                r.to_version,
                r.expected_version,
                r.outcome,
                r.action,
                r.actor,
                r.reason,
                r.at,
            )
            for r in rows
        ]

    @staticmethod
    def _alias_row(conn: Connection, model_id: int, alias: str, lock: bool = False) -> tuple[int | None, int]:
        query = sa.select(aliases.c.version, aliases.c.revision).where(
            aliases.c.model_id == model_id, aliases.c.alias == alias
        )
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).first()
        return (None, 0) if row is None else (row.version, int(row.revision))

    @staticmethod
    def _write_alias(
        conn: Connection, model_id: int, alias: str, version: int | None, revision: int, now: float
    ) -> None:
        if revision == 0:
            conn.execute(
                sa.insert(aliases).values(model_id=model_id, alias=alias, version=version, revision=1, updated_at=now)
            )
            return
        result = conn.execute(
            sa.update(aliases)
            .where(aliases.c.model_id == model_id, aliases.c.alias == alias, aliases.c.revision == revision)
            .values(version=version, revision=revision + 1, updated_at=now)
        )
        if result.rowcount != 1:  # the row lock makes this unreachable; kept as the CAS itself
            raise ConflictError(f"alias {alias} changed under a held lock (revision {revision})")

    @staticmethod
    def _history(conn: Connection, model_id: int, move: AliasMove) -> None:
        conn.execute(
            sa.insert(alias_history).values(
                model_id=model_id,
                alias=move.alias,
                from_version=move.from_version,
                to_version=move.to_version,
                expected_version=move.expected_version,
                outcome=move.outcome,
                action=move.action,
                actor=move.actor,
                reason=move.reason,
                at=move.at,
            )
        )
