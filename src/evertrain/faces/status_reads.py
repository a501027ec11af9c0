"""What ``evertrain status``, the dashboard and the report read from the store, in bounded queries.

Only the metadata (no logs, no artifacts, nothing heavier than SQLAlchemy to import), so
that the status command stays quick.

A store that has run for months holds tens of thousands of runs: every read here is
limited (the newest cycles, one page of runs, the newest versions) and walks an index
(``ix_runs_model_kind``: model, kind, created time; ``ix_runs_model_status``: model,
status, created and ended times, which alone answers the counts by status and the
newest times). Counts come from the database, not from lists read into Python.
:func:`fingerprint` is a handful of aggregate reads that change whenever anything shown
does, so a polling page learns "nothing new" cheaply.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from evertrain.exceptions import NotFoundError
from evertrain.store import Store
from evertrain.store.metadata import (
    alias_history,
    aliases,
    audit_head,
    evaluations,
    model_versions,
    models,
    rollouts,
    runs,
    version_snapshots,
)
from evertrain.store.names import KNOWN_ALIASES, check_model_name

CYCLES_SHOWN = 240
"""The newest cycles drawn and listed (about ten days of hourly cycles)."""
RUNS_PAGE = 50
VERSIONS_SHOWN = 100
RUN_KINDS = ("cycle", "step", "train", "decision", "evaluation", "spec")


def model_id(conn: Any, name: str) -> int:
    check_model_name(name)
    found = conn.execute(sa.select(models.c.id).where(models.c.name == name)).scalar()
    if found is None:
        raise NotFoundError(f"model {name!r} is not registered")
    return int(found)


def models_overview(store: Store) -> list[dict[str, Any]]:
    """Every model with its aliases, counts of versions and runs (failed ones apart), newest activity."""
    with store.db.read() as conn:
        names = {int(r.id): r.name for r in conn.execute(sa.select(models.c.id, models.c.name))}
        held: dict[int, dict[str, int | None]] = {}
        for r in conn.execute(sa.select(aliases.c.model_id, aliases.c.alias, aliases.c.version)):
            held.setdefault(int(r.model_id), {})[r.alias] = r.version
        n_versions: dict[int, int] = {
            int(r.model_id): int(r.n)
            for r in conn.execute(
                sa.select(model_versions.c.model_id, sa.func.count().label("n")).group_by(
                    model_versions.c.model_id
                )
            )
        }
        run_counts: dict[int, dict[str, int]] = {}
        for r in conn.execute(
            sa.select(
                runs.c.model_id,
                runs.c.status,
                sa.func.count().label("n"),
                sa.func.max(runs.c.created_at).label("last"),
            )
            .where(runs.c.model_id.is_not(None))
            .group_by(runs.c.model_id, runs.c.status)
        ):
            counts = run_counts.setdefault(int(r.model_id), {"runs": 0, "failed": 0, "running": 0})
            counts["runs"] += int(r.n)
            if r.status in ("failed", "running"):
                counts[r.status] += int(r.n)
            counts["last"] = max(counts.get("last", 0), int(r.last or 0))
        live = {
            int(r.model_id): {"phase": r.phase, "version": r.version, "share": float(r.share), "step": r.step}
            for r in conn.execute(
                sa.select(
                    rollouts.c.model_id,
                    rollouts.c.phase,
                    rollouts.c.version,
                    rollouts.c.share,
                    rollouts.c.step,
                ).where(rollouts.c.phase.in_(("shadow", "canary", "watching")))
            )
        }
    out = []
    for mid, name in sorted(names.items(), key=lambda kv: kv[1]):
        got = held.get(mid, {})
        counts = run_counts.get(mid, {"runs": 0, "failed": 0, "running": 0})
        out.append(
            {
                "name": name,
                "aliases": {a: got.get(a) for a in KNOWN_ALIASES},
                "n_versions": int(n_versions.get(mid, 0)),
                "n_runs": counts["runs"],
                "n_failed": counts["failed"],
                "n_running": counts["running"],
                "last_activity": counts.get("last"),
                "rollout": live.get(mid),
            }
        )
    return out


FINGERPRINT_SECONDS = 2.0
"""How long a fingerprint is reused: clients polling together share one read."""
_fingerprints: dict[tuple[int, str], tuple[float, str]] = {}


def fingerprint(store: Store, model: str, *, fresh: bool = False) -> str:
    """A short string that changes whenever anything the page shows for ``model`` does.

    Reused for :data:`FINGERPRINT_SECONDS` unless ``fresh``: the counts and newest times
    by status walk the model's entries of the status index, and several clients polling
    at once need that walk only once.
    """
    key = (id(store), model)
    now = time.monotonic()
    held = _fingerprints.get(key)
    if not fresh and held is not None and now - held[0] < FINGERPRINT_SECONDS:
        return held[1]
    value = _read_fingerprint(store, model)
    _fingerprints[key] = (now, value)
    return value


def _read_fingerprint(store: Store, model: str) -> str:
    with store.db.read() as conn:
        mid = model_id(conn, model)
        # per status: how many, the newest created and ended (the status index alone answers it)
        by_status = conn.execute(
            sa.select(
                runs.c.status, sa.func.count(), sa.func.max(runs.c.created_at), sa.func.max(runs.c.ended_at)
            )
            .where(runs.c.model_id == mid)
            .group_by(runs.c.status)
            .order_by(runs.c.status)
        ).all()
        head = conn.execute(sa.select(audit_head.c.seq)).scalar()
        roll = conn.execute(
            sa.select(sa.func.max(rollouts.c.updated_at), sa.func.count()).where(rollouts.c.model_id == mid)
        ).one()
        alias_row = conn.execute(
            sa.select(sa.func.max(aliases.c.updated_at)).where(aliases.c.model_id == mid)
        ).scalar()
    values = [v for row in by_status for v in row]
    return "|".join(str(v) for v in (*values, head, *roll, alias_row))


@dataclass(frozen=True)
class Cycles:
    """The newest cycles of a model (oldest first), how many there are, and ``key``: a digest of
    their ids, states and end times that changes whenever one of them does."""

    cycles: list[dict[str, Any]]
    total: int
    key: str


_cycles_memo: dict[tuple[int, str, int], tuple[str, Cycles]] = {}
_cycles_lock = threading.Lock()


def read_cycles(store: Store, model: str, limit: int = CYCLES_SHOWN) -> Cycles:
    """The newest ``limit`` cycles of ``model`` with their key.

    Their results (each with the drift of every column) are read and parsed only when the
    key moved since the last read: the ids, states and end times of the newest cycles
    come from a few hundred row lookups, so a store that changed elsewhere (a step run
    finished) costs no parse of hundreds of results. A cycle that failed has no result:
    it is shown with its error (``failed`` set).
    """
    with store.db.read() as conn:
        mid = model_id(conn, model)
        where = (runs.c.model_id == mid, runs.c.kind == "cycle")
        order = (runs.c.created_at.desc(), runs.c.id.desc())
        total = int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar() or 0)
        states = conn.execute(
            sa.select(runs.c.id, runs.c.status, runs.c.ended_at).where(*where).order_by(*order).limit(limit)
        ).all()
        key = hashlib.blake2b(repr((total, [tuple(r) for r in states])).encode(), digest_size=8).hexdigest()
        memo = (id(store), model, limit)
        with _cycles_lock:
            held = _cycles_memo.get(memo)
        if held is not None and held[0] == key:
            return held[1]
        rows = conn.execute(
            sa.select(runs.c.id, runs.c.status, runs.c.params, runs.c.result, runs.c.error, runs.c.created_at)
            .where(*where)
            .order_by(*order)
            .limit(limit)
        ).all()
    out = []
    for r in reversed(rows):
        params = dict(r.params or {})
        if r.status == "succeeded" and r.result:
            out.append(dict(r.result))
        else:
            out.append(
                {
                    "cycle": params.get("cycle"),
                    "at": params.get("at", r.created_at),
                    "status": r.status,
                    "failed": r.status == "failed",
                    "error": r.error,
                }
            )
    out.sort(key=lambda c: (c.get("cycle") is None, c.get("cycle") or 0))
    got = Cycles(out, total, key)
    with _cycles_lock:
        if len(_cycles_memo) >= 32:  # stores opened and dropped (tests, commands): keep it small
            _cycles_memo.clear()
        _cycles_memo[memo] = (key, got)
    return got


def runs_page(
    store: Store,
    model: str,
    *,
    offset: int = 0,
    limit: int = RUNS_PAGE,
    status: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """One page of ``model``'s runs, newest first, with the total; ``status``/``kind`` filter them.

    Read kind by kind, each in the order of the (model, kind, created) index, so a page
    costs about ``offset + limit`` rows of each kind whatever the size of the history
    (one query over all kinds would sort every run of the model first).
    """
    offset, limit = max(offset, 0), max(min(limit, 500), 1)
    columns = (
        runs.c.id,
        runs.c.key,
        runs.c.kind,
        runs.c.status,
        runs.c.error,
        runs.c.created_at,
        runs.c.started_at,
        runs.c.ended_at,
        runs.c.parent_id,
    )
    with store.db.read() as conn:
        mid = model_id(conn, model)
        where = [runs.c.model_id == mid]
        if status:
            where.append(runs.c.status == status)
        total = int(
            conn.execute(
                sa.select(sa.func.count()).where(*where, *([runs.c.kind == kind] if kind else []))
            ).scalar()
            or 0
        )
        kinds = (
            [kind]
            if kind
            else list(conn.execute(sa.select(runs.c.kind).where(runs.c.model_id == mid).distinct()).scalars())
        )
        found: list[dict[str, Any]] = []
        for k in kinds:
            found += [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(*columns)
                    .where(*where, runs.c.kind == k)
                    .order_by(runs.c.created_at.desc())
                    .limit(offset + limit)
                )
            ]
    found.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    rows = found[offset : offset + limit]
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "status": status,
        "kind": kind,
        "runs": rows,
    }


def versions(store: Store, model: str, limit: int = VERSIONS_SHOWN) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` versions, newest first, each with its snapshots and gate evaluations."""
    with store.db.read() as conn:
        mid = model_id(conn, model)
        total = int(
            conn.execute(sa.select(sa.func.count()).where(model_versions.c.model_id == mid)).scalar() or 0
        )
        rows = conn.execute(
            sa.select(model_versions)
            .where(model_versions.c.model_id == mid)
            .order_by(model_versions.c.version.desc())
            .limit(limit)
        ).all()
        ids = [r.id for r in rows]
        snaps: dict[int, list[dict[str, str]]] = {}
        gates: dict[int, list[dict[str, Any]]] = {}
        if ids:
            for s in conn.execute(
                sa.select(version_snapshots).where(version_snapshots.c.version_id.in_(ids))
            ):
                snaps.setdefault(s.version_id, []).append({"id": s.snapshot_id, "role": s.role})
            for e in conn.execute(
                sa.select(evaluations).where(evaluations.c.version_id.in_(ids)).order_by(evaluations.c.id)
            ):
                gates.setdefault(e.version_id, []).append(
                    {
                        "champion_version": e.champion_version,
                        "snapshot": e.snapshot_id,
                        "passed": bool(e.passed),
                        "report": e.report,
                        "created_at": e.created_at,
                    }
                )
        moves = conn.execute(
            sa.select(alias_history.c.alias, alias_history.c.to_version, alias_history.c.at)
            .where(alias_history.c.model_id == mid, alias_history.c.outcome == "applied")
            .order_by(alias_history.c.id)
        ).all()
    held_by: dict[int, list[str]] = {}
    for m in moves:
        if m.to_version is not None:
            names = held_by.setdefault(int(m.to_version), [])
            if m.alias not in names:
                names.append(m.alias)
    out = []
    for r in rows:
        out.append(
            {
                "version": r.version,
                "framework": r.framework,
                "metrics": dict(r.metrics or {}),
                "params": dict(r.params or {}),
                "parent": r.parent_version,
                "trigger": r.trigger,
                "run_id": r.run_id,
                "created_at": r.created_at,
                "created_by": r.created_by,
                "artifact_sha256": r.artifact_sha256,
                "size_bytes": r.size_bytes,
                "snapshots": snaps.get(r.id, []),
                "gates": gates.get(r.id, []),
                "aliases_held": held_by.get(int(r.version), []),
            }
        )
    return out, total


def alias_moves(store: Store, model: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` alias moves of ``model``, oldest first."""
    with store.db.read() as conn:
        mid = model_id(conn, model)
        rows = conn.execute(
            sa.select(alias_history)
            .where(alias_history.c.model_id == mid)
            .order_by(alias_history.c.id.desc())
            .limit(limit)
        ).all()
    return [
        {
            "at": r.at,
            "alias": r.alias,
            "action": r.action,
            "from_version": r.from_version,
            "to_version": r.to_version,
            "outcome": r.outcome,
            "actor": r.actor,
            "reason": r.reason,
        }
        for r in reversed(rows)
    ]


def last_decision(store: Store, model: str) -> dict[str, Any] | None:
    """The newest decision run's result, with its time."""
    with store.db.read() as conn:
        mid = model_id(conn, model)
        row = conn.execute(
            sa.select(runs.c.result, runs.c.created_at)
            .where(runs.c.model_id == mid, runs.c.kind == "decision")
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(1)
        ).first()
    return None if row is None else dict(row.result or {}, at=row.created_at)


def newest_cycle(store: Store, model: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The params and result of ``model``'s newest succeeded cycle."""
    with store.db.read() as conn:
        mid = model_id(conn, model)
        row = conn.execute(
            sa.select(runs.c.params, runs.c.result)
            .where(runs.c.model_id == mid, runs.c.kind == "cycle", runs.c.status == "succeeded")
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(1)
        ).first()
    return None if row is None or not row.result else (dict(row.params or {}), dict(row.result))


def rollouts_of(
    store: Store, model: str, limit: int = 20
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The live rollout of ``model`` (None without one) and its newest ``limit`` rollouts, newest first."""
    from evertrain.rollout import state  # the stored record only: no statistics imported

    live = state.get_active(store, model)
    newest = state.history(store, model, limit)
    return (None if live is None else live.to_dict()), [r.to_dict() for r in newest]
