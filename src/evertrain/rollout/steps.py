"""The rollout state machine: shadow, canary steps, promotion, the watch after it.

A rollout takes one candidate version from the spec's plan (``rollout`` in
``evertrain.yaml``) through these phases, one row of the ``rollouts`` table holding
where it is::

    shadow ──advance──► canary step 0 ──advance──► ... ──promote──► watching ──► done (promoted)
       │                     │                          │               │
       └──────rollback───────┴──────────────────────────┘          rollback ──► done (rolled_back)

A controller drives it: :func:`start_rollout` once (after the gates pass), then
:func:`advance` on every tick. ``advance`` reads the step's window of the serving logs,
asks :mod:`evertrain.rollout.analysis` for a verdict and acts on it. Serving replicas only
read the state: the aliases (``shadow``, ``canary``, ``champion``) and the active row's
``share``.

Every alias move is one atomic compare-and-swap in the registry (a promotion also
clears the canary alias in the same transaction; a rollback is one move of the
champion alias back to the baseline). The state row is updated with a revision check
and its audit entry in one transaction. The aliases are the truth: if a controller dies
between an alias move and the row update, the next ``advance`` sees the aliases and
finishes the transition instead of repeating the move.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import pyarrow.compute as pc
import sqlalchemy as sa

from evertrain.exceptions import ConflictError, NotFoundError, UsageError
from evertrain.rollout import analysis
from evertrain.spec import AnalysisSpec, RolloutSpec
from evertrain.store import Store
from evertrain.store.metadata import models, rollouts
from evertrain.store.names import check_model_name, parse_version

SHADOW, CANARY, WATCHING, DONE = "shadow", "canary", "watching", "done"
UNDECIDED_STEP_LIMIT = 6  # steps' durations a step may stay undecided before it is rolled back
PROMOTED, ROLLED_BACK, ABORTED = "promoted", "rolled_back", "aborted"
LIVE_PHASES = (SHADOW, CANARY, WATCHING)
CHAMPION = "champion"


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


def make_plan(rollout_spec: RolloutSpec | None = None, task: str | None = None) -> dict[str, Any]:
    """The plan a rollout follows, frozen at its start so that editing the spec mid-way changes nothing."""
    spec = rollout_spec or RolloutSpec.model_validate({})
    return {
        "shadow": None if spec.shadow is None else spec.shadow.model_dump(),
        "steps": [s.model_dump() for s in spec.steps],
        "analysis": spec.analysis.model_dump(),
        "watch_after_promotion": spec.watch_after_promotion,
        "task": task,
    }


def _row(row: Any, name: str) -> Rollout:
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


def _model_id(conn: Any, name: str) -> int:
    found = conn.execute(sa.select(models.c.id).where(models.c.name == name)).scalar()
    if found is None:
        raise NotFoundError(f"model {name!r} is not registered")
    return int(found)


def history(store: Store, name: str, limit: int = 20) -> list[Rollout]:
    """The newest rollouts of ``name``, newest first."""
    check_model_name(name)
    with store.db.read() as conn:
        model_id = _model_id(conn, name)
        rows = conn.execute(
            sa.select(rollouts)
            .where(rollouts.c.model_id == model_id)
            .order_by(rollouts.c.created_at.desc(), rollouts.c.id)
            .limit(limit)
        ).all()
    return [_row(r, name) for r in rows]


def get_active(store: Store, name: str) -> Rollout | None:
    """The rollout of ``name`` that is not done yet (shadow, canary or watching), if any."""
    check_model_name(name)
    with store.db.read() as conn:
        model_id = _model_id(conn, name)
        row = conn.execute(
            sa.select(rollouts)
            .where(rollouts.c.model_id == model_id, rollouts.c.phase.in_(LIVE_PHASES))
            .order_by(rollouts.c.created_at.desc())
            .limit(1)
        ).first()
    return None if row is None else _row(row, name)


def rollout_status(store: Store, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    active = get_active(store, name)
    return (None if active is None else active.to_dict()), [r.to_dict() for r in history(store, name)]


def _transition(
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
    return _row(row, r.model)


def _end(
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
    return _transition(
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
) -> Rollout:
    """Begin rolling out ``version``: shadow first if the plan has one, else the first canary step.

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
        _end(
            store,
            active,
            actor,
            now,
            "complete",
            PROMOTED,
            [f"watch ended early: rollout of v{number} started"],
        )
    plan = make_plan(rollout_spec, task)
    if plan["shadow"] is not None:
        phase, step, share, alias = SHADOW, None, 0.0, SHADOW
    elif plan["steps"]:
        phase, step, share, alias = CANARY, 0, float(plan["steps"][0]["share"]), CANARY
    else:
        raise UsageError("the rollout plan has neither a shadow step nor canary steps")
    rollout_id = uuid.uuid4().hex
    with store.db.write() as conn:
        model_id = _model_id(conn, name)
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
    return _row(row, name)


def _step_config(r: Rollout) -> tuple[dict[str, Any], bool]:
    """The current step's settings and whether it is the last before promotion."""
    steps = r.plan.get("steps") or []
    if r.phase == SHADOW:
        return r.plan["shadow"], not steps
    index = r.step or 0
    return steps[index], index == len(steps) - 1


def _reconcile(store: Store, r: Rollout, actor: str, now: float) -> Decision | None:
    """Finish a transition that the aliases show already happened (by hand, or before a crash)."""
    aliases = store.registry.get_aliases(r.model)
    champion = aliases.get(CHAMPION)
    if r.phase in (SHADOW, CANARY):
        if champion == r.version:
            return _after_promotion(store, r, actor, now, [f"champion already holds v{r.version}"])
        if aliases.get(r.phase) != r.version:
            done = _end(
                store, r, actor, now, "abort", ABORTED, [f"the {r.phase} alias no longer holds v{r.version}"]
            )
            return Decision("abort", done.reasons, done)
        if champion != r.baseline:
            store.registry.set_alias(
                r.model,
                r.phase,
                None,
                actor=actor,
                expected=r.version,
                action="rollout_abort",
                reason=f"champion moved from v{r.baseline} to v{champion} during the rollout",
            )
            done = _end(
                store,
                r,
                actor,
                now,
                "abort",
                ABORTED,
                [f"champion moved from v{r.baseline} to v{champion} during the rollout"],
            )
            return Decision("abort", done.reasons, done)
    elif r.phase == WATCHING and champion != r.version:
        outcome = ROLLED_BACK if champion == r.baseline else PROMOTED
        done = _end(
            store, r, actor, now, "complete", outcome, [f"champion moved to v{champion} during the watch"]
        )
        return Decision("complete", done.reasons, done)
    return None


def _after_promotion(
    store: Store,
    r: Rollout,
    actor: str,
    now: float,
    reasons: list[str],
    verdict: dict[str, Any] | None = None,
) -> Decision:
    watch = float(r.plan.get("watch_after_promotion") or 0.0)
    # With a watch the promoted version is judged a while longer; without one the rollout ends here.
    ending: dict[str, Any] = (
        {"phase": WATCHING, "step_started_at": now}
        if watch > 0
        else {"phase": DONE, "outcome": PROMOTED, "ended_at": now}
    )
    moved = _transition(
        store,
        r,
        actor=actor,
        action="promote",
        now=now,
        step=None,
        share=0.0,
        reasons=reasons,
        verdict=verdict,
        **ending,
    )
    return Decision("promote", reasons, moved, verdict)


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
            reconciled = _reconcile(store, r, actor, now)
            if reconciled is not None:
                return reconciled
            return _judge(store, r, actor, now, logs_url or store.logs_url)
    except ConflictError as exc:
        return Decision("none", [str(exc)], get_active(store, name))


def _replay_baseline(
    store: Store, r: Rollout, logs_url: str, now: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Correctness per labelled row of the promoted version, and of its predecessor on the same rows."""
    from evertrain.data.logs import labelled
    from evertrain.train.predictor import load_version

    rows = labelled(logs_url, r.model, at=now, since=r.step_started_at, arms=(CHAMPION,))
    if rows.num_rows == 0:
        return None
    rows = rows.filter(pc.equal(rows["model_version"], r.version))
    if rows.num_rows == 0:
        return None
    old = load_version(store, r.model, int(r.baseline or 0))
    inputs = {name: rows[name].to_pylist() for name in old.schema.names if name in rows.column_names}
    if len(inputs) != len(old.schema.names):
        return None  # the log lacks inputs the old version needs: nothing to compare on
    again, _ = old.predict(inputs)
    label = np.asarray([analysis.label_text(v) for v in rows["label"].to_pylist()], dtype=object)
    new = np.asarray([analysis.label_text(v) for v in rows["prediction"].to_pylist()], dtype=object)
    before = np.asarray([analysis.label_text(v) for v in again], dtype=object)
    return new == label, before == label


def _judge(store: Store, r: Rollout, actor: str, now: float, logs_url: str | None) -> Decision:
    if not logs_url:
        raise UsageError("the rollout analysis needs the logs URL of the store")
    plan_analysis = AnalysisSpec.model_validate(r.plan["analysis"])
    task = r.plan.get("task")
    elapsed = now - r.step_started_at
    if r.phase == WATCHING:
        duration = float(r.plan.get("watch_after_promotion") or 0.0)
        after = analysis.read_logs(logs_url, r.model, r.step_started_at, now)
        before = analysis.read_logs(
            logs_url, r.model, r.step_started_at - max(elapsed, 1.0), r.step_started_at
        )
        challenger = analysis.evidence(after, CHAMPION, r.version)
        baseline = analysis.evidence(before, CHAMPION, r.baseline or 0)
        # Latency and quality are not compared across time: load and data both change. Errors
        # are (a model that starts failing requests is wrong at any load); quality is judged
        # by scoring the old champion again on the rows the new one answered.
        checks = [analysis.check_errors(baseline, challenger, plan_analysis)]
        if r.baseline is not None:
            paired = _replay_baseline(store, r, logs_url, now)
            if paired is not None:
                checks.append(analysis.paired_quality(paired[0], paired[1], plan_analysis))
        failed = [c for c in checks if c.status == "fail"]
        verdict = analysis.Verdict(
            "rollback" if failed else "hold",
            [c.detail for c in failed] or [f"watching v{r.version}: nothing failed so far"],
            checks,
            baseline.n,
            challenger.n,
        )
        if verdict.action == "rollback":
            reasons = [
                f"v{r.version} is worse than v{r.baseline} after promotion: {x}" for x in verdict.reasons
            ]
            store.registry.set_alias(
                r.model,
                CHAMPION,
                r.baseline,
                actor=actor,
                expected=r.version,
                action="rollback",
                reason="; ".join(reasons)[:2000],
            )
            done = _end(store, r, actor, now, "rollback", ROLLED_BACK, reasons, verdict=verdict.to_dict())
            return Decision("rollback", reasons, done, verdict.to_dict())
        if elapsed >= duration:
            reasons = [f"watched v{r.version} for {duration:.0f}s after promotion: nothing failed"]
            done = _end(store, r, actor, now, "complete", PROMOTED, reasons, verdict=verdict.to_dict())
            return Decision("complete", reasons, done, verdict.to_dict())
        return _hold(store, r, actor, now, verdict)

    config, final = _step_config(r)
    logs = analysis.read_logs(logs_url, r.model, r.step_started_at, now)
    champion = analysis.evidence(logs, CHAMPION, r.baseline or 0)
    challenger = analysis.evidence(logs, r.phase, r.version)
    verdict = analysis.compare(
        champion,
        challenger,
        plan_analysis,
        min_samples=int(config["min_samples"]),
        elapsed=elapsed,
        duration=float(config["duration"]),
        final=final,
        task=task,
    )
    limit = config.get("max_duration") or UNDECIDED_STEP_LIMIT * float(config["duration"])
    if verdict.action == "hold" and elapsed >= float(limit):
        verdict = analysis.Verdict(
            "rollback",
            [
                f"still undecided after {elapsed:.0f}s (limit {float(limit):.0f}s): "
                + "; ".join(verdict.reasons)
            ],
            verdict.checks,
            verdict.n_champion,
            verdict.n_challenger,
        )
    v = verdict.to_dict()
    if verdict.action == "rollback":
        store.registry.set_alias(
            r.model,
            r.phase,
            None,
            actor=actor,
            expected=r.version,
            action="rollback",
            reason="; ".join(verdict.reasons)[:2000],
        )
        done = _end(store, r, actor, now, "rollback", ROLLED_BACK, verdict.reasons, verdict=v)
        return Decision("rollback", verdict.reasons, done, v)
    if verdict.action == "hold":
        return _hold(store, r, actor, now, verdict)
    if verdict.action == "promote":
        store.registry.promote(
            r.model, r.version, actor=actor, expected=r.baseline, reason="; ".join(verdict.reasons)[:2000]
        )
        return _after_promotion(store, r, actor, now, verdict.reasons, v)
    # advance
    if r.phase == SHADOW:
        first = r.plan["steps"][0]
        store.registry.set_alias(
            r.model,
            CANARY,
            r.version,
            actor=actor,
            clear_others=True,  # the shadow alias on this version goes in the same move
            action="rollout_advance",
            reason="; ".join(verdict.reasons)[:2000],
        )
        moved = _transition(
            store,
            r,
            actor=actor,
            action="advance",
            now=now,
            phase=CANARY,
            step=0,
            share=float(first["share"]),
            step_started_at=now,
            reasons=verdict.reasons,
            verdict=v,
        )
    else:
        index = (r.step or 0) + 1
        moved = _transition(
            store,
            r,
            actor=actor,
            action="advance",
            now=now,
            step=index,
            share=float(r.plan["steps"][index]["share"]),
            step_started_at=now,
            reasons=verdict.reasons,
            verdict=v,
        )
    return Decision("advance", verdict.reasons, moved, v)


def _hold(store: Store, r: Rollout, actor: str, now: float, verdict: analysis.Verdict) -> Decision:
    # A hold is audited when it begins; the ticks that repeat it only refresh the row.
    repeated = (r.last_verdict or {}).get("action") == "hold"
    held = _transition(
        store,
        r,
        actor=actor,
        action="hold",
        now=now,
        audit=not repeated,
        reasons=verdict.reasons,
        verdict=verdict.to_dict(),
    )
    return Decision("hold", verdict.reasons, held, verdict.to_dict())


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
        return _end(store, r, actor, now, "abort", ABORTED, [why])


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
            _reconcile(store, r, actor, now)
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
            _reconcile(store, r, actor, store.clock())
    return {"action": "rollback", "champion": move.to_version, "previous": move.from_version}
