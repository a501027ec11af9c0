"""Starting, advancing and stopping a rollout: what a controller, the CLI and the HTTP API call.

A controller calls :func:`start_rollout` once (after the gates pass), then
:func:`advance` on every tick; ``advance`` reads the step's window of the serving logs,
asks :mod:`evertrain.rollout.analysis` for a verdict and acts on it
(:mod:`evertrain.rollout.machine`). An operator aborts a rollout, promotes or rolls back
by hand; each of those first finishes what the aliases show already happened.

Every alias move and the state row's transition (with its audit entry) commit in one
transaction. The aliases are the truth: if a controller dies between an alias move and
the row update, the next ``advance`` sees the aliases and finishes the transition
instead of repeating the move.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import sqlalchemy as sa

from evertrain.exceptions import ConflictError, UsageError
from evertrain.rollout.machine import judge, reconcile
from evertrain.rollout.state import (
    ABORTED,
    PROMOTED,
    WATCHING,
    Decision,
    Rollout,
    end,
    find_model_id,
    get_active,
    make_plan,
    rollout_from_row,
)
from evertrain.spec import RolloutSpec
from evertrain.store import Store
from evertrain.store.metadata import rollouts
from evertrain.store.names import CANARY, CHAMPION, SHADOW, check_model_name, parse_version


def start_rollout(
    store: Store,
    name: str,
    version: int | str,
    *,
    actor: str,
    rollout_spec: RolloutSpec | None = None,
    task: str | None = None,
    reason: str | None = None,
    now: float | None = None,
    decay: str | None = None,
    proven: str | None = None,
    more_data: str | None = None,
) -> Rollout:
    """Begin rolling out ``version``: shadow first if the plan has one, else the first canary step.

    ``decay``: why the champion is known to be stale, when it is (a confirmed decay): the
    canary is then judged sequentially unless the spec says ``sequential: never``.
    ``proven``: with ``decay``, what showed the version better than the champion on the
    newest labelled rows (the gate's interval above zero): the sequential canary then
    promotes on its first look that finds no errors, without waiting for late labels.
    ``more_data``: why the version was tried on more data (no decay); with ``proven`` it
    is rolled out as after a decay (see :func:`~evertrain.rollout.state.make_plan`).

    Needs a champion to compare with (a first version is promoted directly). A rollout that
    is still watching an earlier promotion is completed; one in shadow or canary is a
    conflict: abort it first.
    """
    check_model_name(name)
    number = parse_version(version)
    now = store.clock() if now is None else now
    store.registry.get_version(name, number)
    champion = store.registry.get_alias(name, CHAMPION)
    if champion is None:
        raise UsageError(
            f"model {name!r} has no champion to compare v{number} with; promote the first version"
        )
    if champion == number:
        raise UsageError(f"model {name!r}: v{number} is the champion already")
    active = get_active(store, name)
    if active is not None and active.phase != WATCHING:
        raise ConflictError(
            f"model {name!r} is rolling out v{active.version} ({active.phase}); "
            f"abort it before starting v{number}"
        )
    if active is not None:
        end(
            store,
            active,
            actor,
            now,
            "complete",
            PROMOTED,
            [f"watch ended early: rollout of v{number} started"],
        )
    plan = make_plan(rollout_spec, task, decay=decay, proven=proven, more_data=more_data)
    if plan["shadow"] is not None:
        phase, step, share, alias = SHADOW, None, 0.0, SHADOW
    elif plan["steps"]:
        phase, step, share, alias = CANARY, 0, float(plan["steps"][0]["share"]), CANARY
    else:
        raise UsageError("the rollout plan has neither a shadow step nor canary steps")
    rollout_id = uuid.uuid4().hex
    with store.db.write() as conn:
        model_id = find_model_id(conn, name)
        conn.execute(
            sa.insert(rollouts).values(
                id=rollout_id,
                model_id=model_id,
                version=number,
                baseline=champion,
                phase=phase,
                step=step,
                share=share,
                step_started_at=now,
                outcome=None,
                plan=plan,
                reasons=[reason or f"rollout of v{number} against champion v{champion}"],
                last_verdict=None,
                revision=1,
                created_by=actor,
                created_at=now,
                updated_at=now,
                ended_at=None,
            )
        )
        store.audit.append(
            conn,
            actor=actor,
            action="rollout_start",
            subject=f"model/{name}/rollout/{rollout_id}",
            reason=reason,
            payload={"version": number, "baseline": champion, "phase": phase, "share": share, "plan": plan},
        )
        row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).one()
        # The row (with its share) and the alias in one transaction: a replica that sees the
        # alias finds the share, and a crash leaves neither.
        store.registry.set_alias(
            name, alias, number, actor=actor, reason=reason or f"rollout of v{number}", action="rollout_start"
        )
    return rollout_from_row(row, name)


def advance(
    store: Store, name: str, *, actor: str, now: float | None = None, logs_url: str | None = None
) -> Decision:
    """One tick of the rollout of ``name``: judge the current step on its logs and act.

    Returns the :class:`Decision`. Safe to call from several controllers at once: alias
    moves are compare-and-swap and the row is revision-checked, so one wins and the
    others return ``none``.
    """
    now = store.clock() if now is None else now
    r = get_active(store, name)
    if r is None:
        return Decision("none", [f"model {name!r} has no active rollout"], None)
    try:
        # One transaction: an alias move and the row's transition (with its audit entry)
        # commit together, so a crash can never leave one without the other.
        with store.db.write():
            reconciled = reconcile(store, r, actor, now)
            if reconciled is not None:
                return reconciled
            return judge(store, r, actor, now, logs_url or store.logs_url)
    except ConflictError as exc:
        return Decision("none", [str(exc)], get_active(store, name))


def abort_rollout(
    store: Store, name: str, *, actor: str, reason: str | None = None, now: float | None = None
) -> Rollout:
    """Stop the active shadow or canary: its alias is cleared (one atomic move); the champion stays."""
    now = store.clock() if now is None else now
    r = get_active(store, name)
    if r is None or r.phase not in (SHADOW, CANARY):
        raise UsageError(f"model {name!r} has no rollout in shadow or canary to abort")
    why = reason or "aborted by hand"
    # The alias cleared and the rollout ended in one transaction, as every other transition.
    with store.db.write():
        if store.registry.get_aliases(name).get(r.phase) == r.version:
            store.registry.set_alias(
                name, r.phase, None, actor=actor, expected=r.version, action="rollout_abort", reason=why
            )
        return end(store, r, actor, now, "abort", ABORTED, [why])


def promote_now(
    store: Store,
    name: str,
    version: int | str,
    *,
    actor: str,
    reason: str | None = None,
    expected: Any = None,
) -> dict[str, Any]:
    """Promote by hand; a rollout of that version ends as promoted, a rollout of another is aborted."""
    number = parse_version(version)
    kwargs: dict[str, Any] = {} if expected is None else {"expected": parse_version(expected)}
    move = store.registry.promote(name, number, actor=actor, reason=reason or "promoted by hand", **kwargs)
    now = store.clock()
    r = get_active(store, name)
    if r is not None:
        with contextlib.suppress(ConflictError):  # another controller finished it meanwhile
            reconcile(store, r, actor, now)
    return {"champion": number, "previous": move.from_version}


def rollback_now(
    store: Store, name: str, *, actor: str, reason: str | None = None, scope: str = "auto"
) -> dict[str, Any]:
    """Undo the newest change: abort the active shadow or canary (``auto``, ``rollout``), else move the
    champion back to the one before it (``auto``, ``champion``)."""
    r = get_active(store, name)
    if scope in ("auto", "rollout") and r is not None and r.phase in (SHADOW, CANARY):
        done = abort_rollout(store, name, actor=actor, reason=reason or "rolled back by hand")
        return {
            "action": "abort_rollout",
            "rollout": done.to_dict(),
            "champion": store.registry.get_alias(name, CHAMPION),
        }
    if scope == "rollout":
        raise UsageError(f"model {name!r} has no rollout in shadow or canary to roll back")
    move = store.registry.rollback(name, actor=actor, reason=reason or "rolled back by hand")
    if r is not None and r.phase == WATCHING:
        with contextlib.suppress(ConflictError):
            reconcile(store, r, actor, store.clock())
    return {"action": "rollback", "champion": move.to_version, "previous": move.from_version}
