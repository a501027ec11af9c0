"""A rollout as stored: the record, its row in the ``rollouts`` table, and its revision-checked moves.

One row holds where a rollout is (phase, step, share, the plan frozen at its start). The
phases ``shadow`` and ``canary`` are named after the alias the candidate holds in them;
``watching`` follows a promotion and ``done`` ends every rollout with its outcome.
Serving replicas read only the aliases and the active row's ``share``;
:mod:`evertrain.rollout.machine` moves the row on, :mod:`evertrain.rollout.commands`
starts and stops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import sqlalchemy as sa

from evertrain.exceptions import ConflictError, NotFoundError
from evertrain.store import Store
from evertrain.store.metadata import models, rollouts
from evertrain.store.names import CANARY, SHADOW, check_model_name

if TYPE_CHECKING:
    # Only starting a rollout needs the spec's models: reading the stored record (``status``,
    # the dashboard) must not pay for pydantic's schemas of the whole project file.
    from evertrain.spec import RolloutSpec

WATCHING, DONE = "watching", "done"
PROMOTED, ROLLED_BACK, ABORTED = "promoted", "rolled_back", "aborted"
LIVE_PHASES = (SHADOW, CANARY, WATCHING)


@dataclass(frozen=True)
class Rollout:
    """One rollout, as stored."""

    id: str
    model: str
    version: int
    baseline: int | None
    phase: str
    step: int | None
    share: float
    step_started_at: float
    outcome: str | None
    plan: dict[str, Any]
    reasons: list[str]
    last_verdict: dict[str, Any] | None
    revision: int
    created_by: str
    created_at: float
    updated_at: float
    ended_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DecisionDict(TypedDict):
    """``Decision.to_dict()``: what one tick of a rollout did, as the faces and the audit log show it."""

    action: str
    reasons: list[str]
    rollout: dict[str, Any] | None  # ``Rollout.to_dict()`` after the tick
    verdict: dict[str, Any] | None


@dataclass(frozen=True)
class Decision:
    """What one :func:`advance` did: ``hold``, ``advance``, ``promote``, ``rollback``, ``complete``,
    ``abort`` or ``none`` (nothing to do), with the reasons and the verdict behind it."""

    action: str
    reasons: list[str]
    rollout: Rollout | None
    verdict: dict[str, Any] | None = None

    def to_dict(self) -> DecisionDict:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "rollout": None if self.rollout is None else self.rollout.to_dict(),
            "verdict": self.verdict,
        }


def make_plan(
    rollout_spec: RolloutSpec | None = None,
    task: str | None = None,
    *,
    decay: str | None = None,
    proven: str | None = None,
    more_data: str | None = None,
) -> dict[str, Any]:
    """The plan a rollout follows, frozen at its start so that editing the spec mid-way changes nothing.

    ``decay``: why the champion is known to be stale (the version was trained for a
    confirmed decay), which makes ``sequential: auto`` judge the canary sequentially.
    ``proven``: what showed the version better than the champion on the newest labelled
    rows; kept only for a sequential canary after a decay or on more data, where it stands
    for the labels the canary would otherwise wait for.
    ``more_data``: why the version was tried on more data; with ``proven`` it is judged as
    after a decay: a rollout in progress holds every trigger, so a plain canary of a version
    already shown better would hold the loop's answer to the next change for its steps.

    A proven version's canary starts at the plan's largest step: the offline evidence has
    shown every request the champion answers answered worse, and what the canary has left
    to show (that the version serves without errors, within its latency) it shows at its
    first look, at any share; the smaller steps would only keep more traffic on the model
    known to be worse. The plan records the steps it skipped.

    >>> [s["share"] for s in make_plan(decay="a decay")["steps"]]
    [0.1, 0.5]
    >>> plan = make_plan(decay="a decay", proven="better on the newest rows")
    >>> [s["share"] for s in plan["steps"]], [s["share"] for s in plan["skipped_steps"]]
    ([0.5], [0.1])
    """
    if rollout_spec is None:
        from evertrain.spec import RolloutSpec

        rollout_spec = RolloutSpec.model_validate({})
    spec = rollout_spec
    hurry = decay is not None or (more_data is not None and proven is not None)
    sequential = spec.sequential == "always" or (spec.sequential == "auto" and hurry)
    kept_proof = proven if sequential and hurry else None
    steps = [s.model_dump() for s in spec.steps]
    skipped, steps = (steps[:-1], steps[-1:]) if kept_proof is not None else ([], steps)
    return {
        "sequential": sequential,
        "decay": decay,
        "more_data": more_data,
        "proven": kept_proof,
        "shadow": None if spec.shadow is None else spec.shadow.model_dump(),
        "steps": steps,
        "skipped_steps": skipped,
        "analysis": spec.analysis.model_dump(),
        "watch_after_promotion": spec.watch_after_promotion,
        "task": task,
    }


def rollout_from_row(row: Any, name: str) -> Rollout:
    return Rollout(
        id=row.id,
        model=name,
        version=row.version,
        baseline=row.baseline,
        phase=row.phase,
        step=row.step,
        share=float(row.share),
        step_started_at=float(row.step_started_at),
        outcome=row.outcome,
        plan=dict(row.plan or {}),
        reasons=list(row.reasons or []),
        last_verdict=row.last_verdict,
        revision=int(row.revision),
        created_by=row.created_by,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        ended_at=row.ended_at,
    )


def find_model_id(conn: Any, name: str) -> int:
    found = conn.execute(sa.select(models.c.id).where(models.c.name == name)).scalar()
    if found is None:
        raise NotFoundError(f"model {name!r} is not registered")
    return int(found)


def history(store: Store, name: str, limit: int = 20) -> list[Rollout]:
    """The newest rollouts of ``name``, newest first."""
    check_model_name(name)
    with store.db.read() as conn:
        model_id = find_model_id(conn, name)
        rows = conn.execute(
            sa.select(rollouts)
            .where(rollouts.c.model_id == model_id)
            .order_by(rollouts.c.created_at.desc(), rollouts.c.id)
            .limit(limit)
        ).all()
    return [rollout_from_row(r, name) for r in rows]


def get_active(store: Store, name: str) -> Rollout | None:
    """The rollout of ``name`` that is not done yet (shadow, canary or watching), if any."""
    check_model_name(name)
    with store.db.read() as conn:
        model_id = find_model_id(conn, name)
        row = conn.execute(
            sa.select(rollouts)
            .where(rollouts.c.model_id == model_id, rollouts.c.phase.in_(LIVE_PHASES))
            .order_by(rollouts.c.created_at.desc())
            .limit(1)
        ).first()
    return None if row is None else rollout_from_row(row, name)


def rollout_status(store: Store, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The active rollout of ``name`` (None without one) and its newest rollouts, as dictionaries."""
    active = get_active(store, name)
    return (None if active is None else active.to_dict()), [r.to_dict() for r in history(store, name)]


def transition(
    store: Store,
    r: Rollout,
    *,
    actor: str,
    action: str,
    reasons: list[str],
    now: float,
    audit: bool = True,
    verdict: dict[str, Any] | None = None,
    **changes: Any,
) -> Rollout:
    """Move the row on (revision-checked) and write the decision to the audit log, in one transaction."""
    values = dict(changes, reasons=reasons, revision=r.revision + 1, updated_at=now)
    if verdict is not None:
        values["last_verdict"] = verdict
    with store.db.write() as conn:
        result = conn.execute(
            sa.update(rollouts)
            .where(rollouts.c.id == r.id, rollouts.c.revision == r.revision)
            .values(**values)
        )
        if result.rowcount != 1:
            raise ConflictError(
                f"rollout {r.id} of {r.model!r} was moved by another controller (nothing changed)"
            )
        if audit:
            store.audit.append(
                conn,
                actor=actor,
                action=f"rollout_{action}",
                subject=f"model/{r.model}/rollout/{r.id}",
                reason="; ".join(reasons)[:2000] or None,
                payload={
                    "version": r.version,
                    "baseline": r.baseline,
                    "from": {"phase": r.phase, "step": r.step, "share": r.share},
                    "to": {k: changes.get(k, getattr(r, k)) for k in ("phase", "step", "share", "outcome")},
                    "verdict": verdict,
                },
            )
        row = conn.execute(sa.select(rollouts).where(rollouts.c.id == r.id)).one()
    return rollout_from_row(row, r.model)


def end(
    store: Store,
    r: Rollout,
    actor: str,
    now: float,
    action: str,
    outcome: str,
    reasons: list[str],
    verdict: dict[str, Any] | None = None,
) -> Rollout:
    """Finish a rollout: the last transition, to ``done`` with its outcome."""
    return transition(
        store,
        r,
        actor=actor,
        action=action,
        now=now,
        phase=DONE,
        outcome=outcome,
        ended_at=now,
        reasons=reasons,
        verdict=verdict,
    )
