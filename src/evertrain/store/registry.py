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

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.exceptions import ConflictError, DataValidationError, NotFoundError, UsageError
from evertrain.store._tx import run_write
from evertrain.store.artifacts import ArtifactStore, check_digest
from evertrain.store.audit import AuditLog
from evertrain.store.loadable import check_loadable
from evertrain.store.metadata import (
    Database,
    alias_history,
    aliases,
    model_versions,
    models,
    version_snapshots,
)
from evertrain.store.metadata import snapshots as snapshot_table
from evertrain.store.names import CHAMPION, check_alias, check_model_name, parse_version


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

# The statements of register and of alias moves, built once: on SQLite, building a
# statement costs more than running it, and these run for every version and promotion.
_b = sa.bindparam
_MODEL_ID = sa.select(models.c.id).where(models.c.name == _b("name"))
_MODEL_ID_LOCKED = _MODEL_ID.with_for_update()
_VERSION_OF_RUN = sa.select(model_versions.c.version).where(
    model_versions.c.model_id == _b("model_id"), model_versions.c.run_id == _b("run_id")
)
_LATEST_VERSION = sa.select(sa.func.max(model_versions.c.version)).where(
    model_versions.c.model_id == _b("model_id")
)
_VERSION_ID = sa.select(model_versions.c.id).where(
    model_versions.c.model_id == _b("model_id"), model_versions.c.version == _b("version")
)
_ARTIFACT_OF = (
    sa.select(model_versions.c.artifact_sha256, model_versions.c.framework)
    .join(models, models.c.id == model_versions.c.model_id)
    .where(models.c.name == _b("name"), model_versions.c.version == _b("version"))
)
_ALIAS_ROW = sa.select(aliases.c.version, aliases.c.revision).where(
    aliases.c.model_id == _b("model_id"), aliases.c.alias == _b("alias")
)
_ALIAS_ROW_LOCKED = _ALIAS_ROW.with_for_update()
_ALIASES_ON_TARGET = (
    sa.select(aliases.c.alias, aliases.c.revision)
    .where(
        aliases.c.model_id == _b("model_id"),
        aliases.c.version == _b("target"),
        aliases.c.alias != _b("alias"),
    )
    .order_by(aliases.c.alias)
    .with_for_update()
)
_MOVE_ALIAS = (
    sa.update(aliases)
    .where(
        aliases.c.model_id == _b("of_model"),
        aliases.c.alias == _b("of_alias"),
        aliases.c.revision == _b("seen"),
    )
    .values(version=_b("new_version"), revision=_b("new_revision"), updated_at=_b("now"))
)
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


def _json_object(what: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """``value`` as it will read back from the store: strict JSON (no NaN), or a UsageError."""
    try:
        text = json.dumps(dict(value or {}), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} must be a JSON object of finite numbers, strings, lists: {exc}") from None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


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
        found = conn.execute(_MODEL_ID_LOCKED if lock else _MODEL_ID, {"name": name}).scalar()
        if found is not None:
            return int(found)
        if not create:
            raise NotFoundError(f"model {name!r} is not registered")
        result = conn.execute(sa.insert(models), {"name": name, "created_at": self.clock()})
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
        # One stat, not a read: the bytes are hashed on every read, so a blob damaged
        # later is refused then; hashing it here too would double the I/O of each version.
        try:
            size = self.artifacts.size(artifact_sha256)
        except NotFoundError:
            raise NotFoundError(
                f"artifact {artifact_sha256} is not in the artifact store; store it first"
            ) from None
        params_d, metrics_d = _json_object("params", params), _json_object("metrics", metrics)

        def work(conn: Connection) -> ModelVersion:
            model_id = self._model_id(conn, name, create=True, lock=True)
            if run_id is not None:
                existing = conn.execute(_VERSION_OF_RUN, {"model_id": model_id, "run_id": run_id}).scalar()
                if existing is not None:
                    return self._version(conn, name, int(existing))
            if parent is not None:
                self._require_version(conn, model_id, name, parent)
            for sid, _ in links:
                if (
                    conn.execute(sa.select(snapshot_table.c.id).where(snapshot_table.c.id == sid)).first()
                    is None
                ):
                    raise NotFoundError(
                        f"snapshot {sid} is not recorded; snapshot the data before registering"
                    )
            latest = conn.execute(_LATEST_VERSION, {"model_id": model_id}).scalar()
            version = int(latest or 0) + 1
            now = self.clock()
            result = conn.execute(
                sa.insert(model_versions),
                {
                    "model_id": model_id,
                    "version": version,
                    "artifact_sha256": artifact_sha256,
                    "size_bytes": size,
                    "framework": framework,
                    "params": params_d,
                    "metrics": metrics_d,
                    "code_version": code_version,
                    "parent_version": parent,
                    "trigger": trigger,
                    "run_id": run_id,
                    "created_at": now,
                    "created_by": actor,
                },
            )
            version_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            for sid, role in dict.fromkeys(links):
                conn.execute(
                    sa.insert(version_snapshots), {"version_id": version_id, "snapshot_id": sid, "role": role}
                )
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
            return ModelVersion(
                model=name,
                version=version,
                artifact_sha256=artifact_sha256,
                size_bytes=size,
                framework=framework,
                params=params_d,
                metrics=metrics_d,
                code_version=code_version,
                parent=parent,
                trigger=trigger,
                run_id=run_id,
                created_at=now,
                created_by=actor,
                snapshots=[{"id": s, "role": r} for r, s in sorted({(r, s) for s, r in links})],
            )

        return run_write(self.db, work)

    def _require_version(self, conn: Connection, model_id: int, name: str, version: int) -> int:
        found = conn.execute(_VERSION_ID, {"model_id": model_id, "version": version}).scalar()
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

    def version_of_run(self, name: str, run_id: str) -> int | None:
        """The version that run ``run_id`` registered for model ``name``, if any (one lookup,
        whatever the number of versions)."""
        check_model_name(name)
        with self.db.read() as conn:
            found = conn.execute(_MODEL_ID, {"name": name}).scalar()
            if found is None:
                return None
            version = conn.execute(_VERSION_OF_RUN, {"model_id": found, "run_id": run_id}).scalar()
        return None if version is None else int(version)

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

    def check_servable(self, name: str, version: int | str) -> None:
        """Check that a version's artifact hashes to its digest and is a well-formed model of its framework.

        Raises :class:`IntegrityError` for a blob that no longer matches its hash and
        :class:`DataValidationError` for one its framework cannot load (see
        :mod:`evertrain.store.loadable`), naming the version.
        """
        check_model_name(name)
        number = parse_version(version)
        with self.db.read() as conn:  # one query: this runs on every promotion and rollback
            row = conn.execute(_ARTIFACT_OF, {"name": name, "version": number}).first()
            if row is None:
                self._model_id(conn, name)  # raises when the model is not registered
                raise NotFoundError(f"model {name!r} has no version {number}")
        data = self.artifacts.get(row.artifact_sha256)
        try:
            check_loadable(row.framework, data)
        except DataValidationError as exc:
            raise DataValidationError(
                f"model {name!r} version {number}: its {row.framework} artifact cannot be loaded: {exc}"
            ) from None

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
        expected: int | _Unset | None = UNSET,
        reason: str | None = None,
        action: str = "set_alias",
        clear_others: bool = False,
        keep_if_current: bool = False,
    ) -> AliasMove:
        """Point ``alias`` at ``version`` (``None`` clears it) if it still holds ``expected``.

        Without ``expected`` the alias is compared with what it held when this call read
        it, which still refuses to overwrite a move that another process made meanwhile.
        With ``clear_others``, every other alias that holds ``version`` when the move
        commits is cleared in the same transaction (promoting a canary clears ``canary``;
        a canary moved elsewhere meanwhile stays). A lost race raises
        :class:`ConflictError` after the attempt is written to the alias history. With
        ``keep_if_current``, an alias that already holds ``version`` (as expected) is left
        alone: nothing is written and the move's outcome is ``"unchanged"``.
        """
        check_model_name(name)
        check_alias(alias)
        target = None if version is None else parse_version(version)
        if expected is not UNSET and expected is not None:
            expected = parse_version(expected)  # type: ignore[arg-type]
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
            if keep_if_current and current == want and current == target:
                return AliasMove(name, alias, current, target, want, "unchanged", action, actor, reason, now)
            if current != want:
                move = AliasMove(name, alias, current, target, want, "conflict", action, actor, reason, now)
                self._history(conn, model_id, move)
                return move
            self._write_alias(conn, model_id, alias, target, revision, now)
            move = AliasMove(name, alias, current, target, want, "applied", action, actor, reason, now)
            self._history(conn, model_id, move)
            cleared = {}
            if clear_others and target is not None:
                # Read under the locks this transaction holds, so only aliases that are on
                # the target now are cleared, never one that moved on since the caller looked.
                others = conn.execute(
                    _ALIASES_ON_TARGET, {"model_id": model_id, "target": target, "alias": alias}
                ).all()
                for other, other_rev in others:
                    self._write_alias(conn, model_id, other, None, int(other_rev), now)
                    self._history(
                        conn,
                        model_id,
                        AliasMove(name, other, target, None, target, "applied", action, actor, reason, now),
                    )
                    cleared[other] = target
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
        expected: int | _Unset | None = UNSET,
        reason: str | None = None,
    ) -> AliasMove:
        """Make ``version`` the champion; a canary, challenger or shadow alias on it is cleared.

        The version's artifact is checked first (hash and structure,
        :meth:`check_servable`). Promoting the current champion again changes nothing
        (outcome ``"unchanged"``): no history entry, so the next rollback still goes back
        to the champion before it.
        """
        number = parse_version(version)
        self.check_servable(name, number)
        return self.set_alias(
            name,
            CHAMPION,
            number,
            actor=actor,
            expected=expected,
            reason=reason,
            action="promote",
            clear_others=True,
            keep_if_current=True,
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
        self.check_servable(name, stack[-2])
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
        row = conn.execute(
            _ALIAS_ROW_LOCKED if lock else _ALIAS_ROW, {"model_id": model_id, "alias": alias}
        ).first()
        return (None, 0) if row is None else (row.version, int(row.revision))

    @staticmethod
    def _write_alias(
        conn: Connection, model_id: int, alias: str, version: int | None, revision: int, now: float
    ) -> None:
        if revision == 0:
            conn.execute(
                sa.insert(aliases),
                {"model_id": model_id, "alias": alias, "version": version, "revision": 1, "updated_at": now},
            )
            return
        result = conn.execute(
            _MOVE_ALIAS,
            {
                "of_model": model_id,
                "of_alias": alias,
                "seen": revision,
                "new_version": version,
                "new_revision": revision + 1,
                "now": now,
            },
        )
        if result.rowcount != 1:  # the row lock makes this unreachable; kept as the CAS itself
            raise ConflictError(f"alias {alias} changed under a held lock (revision {revision})")

    @staticmethod
    def _history(conn: Connection, model_id: int, move: AliasMove) -> None:
        conn.execute(
            sa.insert(alias_history),
            {
                "model_id": model_id,
                "alias": move.alias,
                "from_version": move.from_version,
                "to_version": move.to_version,
                "expected_version": move.expected_version,
                "outcome": move.outcome,
                "action": move.action,
                "actor": move.actor,
                "reason": move.reason,
                "at": move.at,
            },
        )
