"""The hash-chained, append-only audit log.

Each entry stores the sha256 of the previous entry and its own hash over a canonical
JSON form of its fields, so that altering, removing or reordering any row breaks the
chain at that row. ``audit_head`` holds the newest sequence number and hash; appending
updates it in the same transaction, which also serializes concurrent appenders (a row
lock on PostgreSQL, the write lock on SQLite) and lets ``verify`` notice a truncated tail.

Entries are appended inside the caller's transaction, so a state change and its audit
entry commit together or not at all. That is also what ``verify`` checks beyond the
chain itself: every registered version has its ``register`` entry (same artifact hash),
every alias move the registry applied has its entry, and replaying the entries gives the
aliases the registry holds. So wiping the audit table and its head together, or
rewriting a version or an alias behind the log's back, is found: a chain that is whole
but says less than the registry is not intact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.store.metadata import (
    Database,
    alias_history,
    aliases,
    audit_head,
    audit_log,
    model_versions,
    models,
)

GENESIS = "0" * 64

# Statements built once: appending runs on every state change, and building a statement
# costs more than running it on SQLite.
_HEAD_FOR_UPDATE = (
    sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
)
_MOVE_HEAD = (
    sa.update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=sa.bindparam("new_seq"), hash=sa.bindparam("new_hash"))
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(
    seq: int, at: float, actor: str, action: str, subject: str, reason: str | None, payload: str, prev: str
) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "at": repr(float(at)),
            "actor": actor,
            "action": action,
            "subject": subject,
            "reason": reason,
            "payload": payload,
            "prev": prev,
        }
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    subject: str
    reason: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    n_entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


class AuditLog:
    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def append(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        subject: str,
        reason: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry inside the caller's write transaction ``conn``."""
        head = conn.execute(_HEAD_FOR_UPDATE).first()
        if head is None:
            conn.execute(sa.insert(audit_head), {"id": 1, "seq": 0, "hash": GENESIS})
            seq, prev = 0, GENESIS
        else:
            seq, prev = int(head.seq), str(head.hash)
        seq += 1
        at = float(self.clock())
        body = canonical_json(payload or {})
        digest = entry_hash(seq, at, actor, action, subject, reason, body, prev)
        conn.execute(
            sa.insert(audit_log),
            {
                "seq": seq,
                "at": at,
                "actor": actor,
                "action": action,
                "subject": subject,
                "reason": reason,
                "payload": body,
                "prev_hash": prev,
                "hash": digest,
            },
        )
        conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
        return AuditEntry(seq, at, actor, action, subject, reason, payload or {}, prev, digest)

    def entries(self, subject_prefix: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        query = sa.select(audit_log).order_by(audit_log.c.seq)
        if subject_prefix is not None:
            query = query.where(audit_log.c.subject.startswith(subject_prefix, autoescape=True))
        if limit is not None:
            query = query.order_by(None).order_by(audit_log.c.seq.desc()).limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        out = [
            AuditEntry(
                r.seq,
                r.at,
                r.actor,
                r.action,
                r.subject,
                r.reason,
                json.loads(r.payload),
                r.prev_hash,
                r.hash,
            )
            for r in rows
        ]
        return sorted(out, key=lambda e: e.seq)

    def verify(self) -> VerifyResult:
        """Recompute the chain, then hold it against the registry.

        Names the first entry that was altered, removed or reordered; or the version or
        alias the registry holds that the chain does not account for.
        """
        with self.db.read() as conn:
            head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).first()
            rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).all()
            registry = _registry_state(conn)
        chain = self._verify_chain(head, rows)
        if not chain.ok:
            return chain
        problem = _cross_check(rows, registry)
        if problem is not None:
            return VerifyResult(False, len(rows), None, problem)
        return chain

    @staticmethod
    def _verify_chain(head: Any, rows: Sequence[Any]) -> VerifyResult:
        prev, expected_seq = GENESIS, 1
        for row in rows:
            if row.seq != expected_seq:
                return VerifyResult(
                    False,
                    len(rows),
                    expected_seq,
                    f"entry {expected_seq} is missing (the next entry is {row.seq})",
                )
            if row.prev_hash != prev:
                return VerifyResult(
                    False,
                    len(rows),
                    row.seq,
                    f"entry {row.seq} ({row.action} {row.subject}) does not follow entry {row.seq - 1}: "
                    f"its previous-hash does not match (entries removed or reordered, or entry {row.seq - 1} "
                    "rewritten with a new hash)",
                )
            actual = entry_hash(
                row.seq, row.at, row.actor, row.action, row.subject, row.reason, row.payload, row.prev_hash
            )
            if actual != row.hash:
                return VerifyResult(
                    False,
                    len(rows),
                    row.seq,
                    f"entry {row.seq} ({row.action} {row.subject}) was altered: its content hashes to "
                    f"{actual[:12]}, the chain says {row.hash[:12]}",
                )
            prev, expected_seq = row.hash, expected_seq + 1
        last = expected_seq - 1
        if head is None:
            if rows:
                return VerifyResult(False, len(rows), last, "the chain head record is missing")
            return VerifyResult(True, 0)
        if head.seq > last:
            return VerifyResult(
                False, len(rows), last + 1, f"entry {last + 1} is missing (the head says {head.seq} entries)"
            )
        if head.seq < last:
            return VerifyResult(
                False,
                len(rows),
                head.seq + 1,
                f"entry {head.seq + 1} was added outside the log: the chain head ends at entry {head.seq}",
            )
        if head.hash != prev:
            return VerifyResult(
                False,
                len(rows),
                last,
                f"entry {last} was rewritten with a new hash: the chain head recorded another one",
            )
        return VerifyResult(True, len(rows))


@dataclass(frozen=True)
class _Registry:
    versions: list[tuple[str, int, str]]  # model, version, artifact sha256
    applied_moves: dict[tuple[str, str], int]  # (model, alias) -> moves applied
    held: dict[tuple[str, str], int | None]  # (model, alias) -> version now


def _registry_state(conn: Connection) -> _Registry:
    versions = [
        (str(r.name), int(r.version), str(r.artifact_sha256))
        for r in conn.execute(
            sa.select(models.c.name, model_versions.c.version, model_versions.c.artifact_sha256)
            .join(models, models.c.id == model_versions.c.model_id)
            .order_by(models.c.name, model_versions.c.version)
        )
    ]
    applied: dict[tuple[str, str], int] = {}
    for r in conn.execute(
        sa.select(models.c.name, alias_history.c.alias, sa.func.count())
        .join(models, models.c.id == alias_history.c.model_id)
        .where(alias_history.c.outcome == "applied")
        .group_by(models.c.name, alias_history.c.alias)
    ):
        applied[(str(r[0]), str(r[1]))] = int(r[2])
    held = {
        (str(r.name), str(r.alias)): None if r.version is None else int(r.version)
        for r in conn.execute(
            sa.select(models.c.name, aliases.c.alias, aliases.c.version).join(
                models, models.c.id == aliases.c.model_id
            )
        )
    }
    return _Registry(versions, applied, held)


def _cross_check(rows: Sequence[Any], registry: _Registry) -> str | None:
    """What the registry holds that the (whole) chain does not account for; None if nothing."""
    registered: dict[tuple[str, int], str | None] = {}
    moves: dict[tuple[str, str], int] = {}
    replayed: dict[tuple[str, str], int | None] = {}
    for row in rows:
        parts = str(row.subject).split("/")
        if len(parts) < 3 or parts[0] != "model":
            continue
        model = parts[1]
        try:
            payload = json.loads(row.payload)
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if row.action == "register" and len(parts) == 3 and parts[2].isdigit():
            sha = payload.get("artifact_sha256")
            registered[(model, int(parts[2]))] = sha if isinstance(sha, str) else None
        elif len(parts) == 4 and parts[2] == "alias":
            alias = parts[3]
            moves[(model, alias)] = moves.get((model, alias), 0) + 1
            to = payload.get("to")
            replayed[(model, alias)] = to if isinstance(to, int) else None
            cleared = payload.get("cleared")
            for other in cleared if isinstance(cleared, dict) else {}:
                moves[(model, str(other))] = moves.get((model, str(other)), 0) + 1
                replayed[(model, str(other))] = None
    for model, version, sha in registry.versions:
        if (model, version) not in registered:
            return (
                f"model {model!r} v{version} is registered but the audit chain has no register entry "
                f"for it ({len(rows)} entries: entries removed, or the version written behind the log's back)"
            )
        if registered[(model, version)] not in (None, sha):
            return (
                f"model {model!r} v{version}: the registry holds artifact {sha[:12]}, the audit chain "
                f"registered {str(registered[(model, version)])[:12]}"
            )
    known = {(m, v) for m, v, _ in registry.versions}
    for model, version in registered:
        if (model, version) not in known:
            return f"the audit chain registers model {model!r} v{version}, which the registry does not have"
    for key in sorted(set(registry.applied_moves) | set(moves)):
        in_registry, in_chain = registry.applied_moves.get(key, 0), moves.get(key, 0)
        if in_registry != in_chain:
            return (
                f"alias {key[1]!r} of model {key[0]!r}: the registry applied {in_registry} moves, "
                f"the audit chain records {in_chain}"
            )
    for key, held in sorted(registry.held.items()):
        last = replayed.get(key)
        if last != held:
            return (
                f"alias {key[1]!r} of model {key[0]!r} points at {_v(held)} in the registry, "
                f"but the audit chain last moved it to {_v(last)}"
            )
    return None


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"
