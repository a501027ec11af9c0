"""The hash-chained, append-only audit log.

Each entry stores the sha256 of the previous entry and its own hash over a canonical
JSON form of its fields, so that altering, removing or reordering any row breaks the
chain at that row. ``audit_head`` holds the newest sequence number and hash; appending
updates it in the same transaction, which also serializes concurrent appenders (a row
lock on PostgreSQL, the write lock on SQLite) and lets ``verify`` notice a truncated tail.

Entries are appended inside the caller's transaction, so a state change and its audit
entry commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.store.metadata import Database, audit_head, audit_log

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
        """Recompute the chain; name the first entry that was altered, removed or reordered."""
        with self.db.read() as conn:
            head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).first()
            rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).all()
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
