"""The rollout's transitions: judge the current phase on its window of the logs, and act.

::

    shadow ──advance──► canary step 0 ──advance──► ... ──promote──► watching ──► done (promoted)
       │                     │                          │               │
       └──────rollback───────┴──────────────────────────┘          rollback ──► done (rolled_back)

Each phase has its judge: :func:`judge_step` compares a shadow or canary step with the
champion over the step's window and holds, advances, promotes or rolls back;
:func:`judge_watch` keeps judging a promoted version against the one it replaced and
rolls back or completes. :func:`reconcile` first finishes a transition the aliases show
already happened (moved by hand, or before a crash): the aliases are the truth.

Every alias move is one atomic compare-and-swap in the registry (a promotion also
clears the canary alias in the same transaction; a rollback is one move of the champion
alias back to the baseline); the caller (:func:`evertrain.rollout.commands.advance`)
holds one transaction around the move and the row's transition.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow.compute as pc

from evertrain.exceptions import UsageError
from evertrain.rollout import analysis
from evertrain.rollout.evidence import Evidence, evidence, label_text, read_logs
from evertrain.rollout.state import (
    ABORTED,
    DONE,
    PROMOTED,
    ROLLED_BACK,
    WATCHING,
    Decision,
    Rollout,
    end,
    transition,
)
from evertrain.spec import AnalysisSpec
from evertrain.store import Store
from evertrain.store.names import CANARY, CHAMPION, SHADOW

UNDECIDED_STEP_LIMIT = 6  # steps' durations a step may stay undecided before it is rolled back


def _step_config(r: Rollout) -> tuple[dict[str, Any], bool]:
    """The current step's settings and whether it is the last before promotion."""
    steps = r.plan.get("steps") or []
    if r.phase == SHADOW:
        return r.plan["shadow"], not steps
    index = r.step or 0
    return steps[index], index == len(steps) - 1


def reconcile(store: Store, r: Rollout, actor: str, now: float) -> Decision | None:
    """Finish a transition that the aliases show already happened (by hand, or before a crash)."""
    aliases = store.registry.get_aliases(r.model)
    champion = aliases.get(CHAMPION)
    if r.phase in (SHADOW, CANARY):
        if champion == r.version:
            return after_promotion(store, r, actor, now, [f"champion already holds v{r.version}"])
        if aliases.get(r.phase) != r.version:
            done = end(
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
            done = end(
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
        done = end(
            store, r, actor, now, "complete", outcome, [f"champion moved to v{champion} during the watch"]
        )
        return Decision("complete", done.reasons, done)
    return None


def after_promotion(
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
    moved = transition(
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


def _replay_baseline(
    store: Store, r: Rollout, logs_url: str, now: float
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Per labelled row of the promoted version, and of its predecessor on the same rows:
    correctness for a classifier, absolute error for a regression (the flag says which)."""
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
    new_predictions = np.asarray(rows["prediction"].to_pylist(), dtype=object)
    if not analysis.is_classification(r.plan.get("task"), new_predictions):
        label = analysis.floats(np.asarray(rows["label"].to_pylist(), dtype=object))
        new = analysis.floats(new_predictions)
        before = analysis.floats(np.asarray(list(again), dtype=object))
        return np.abs(new - label), np.abs(before - label), False
    label = np.asarray([label_text(v) for v in rows["label"].to_pylist()], dtype=object)
    new = np.asarray([label_text(v) for v in new_predictions], dtype=object)
    before = np.asarray([label_text(v) for v in again], dtype=object)
    return new == label, before == label, True


def judge(store: Store, r: Rollout, actor: str, now: float, logs_url: str | None) -> Decision:
    """Judge the rollout's current phase on its window of the logs at ``logs_url``, and act on the verdict."""
    if not logs_url:
        raise UsageError("the rollout analysis needs the logs URL of the store")
    if r.phase == WATCHING:
        return judge_watch(store, r, actor, now, logs_url)
    return judge_step(store, r, actor, now, logs_url)


def judge_watch(store: Store, r: Rollout, actor: str, now: float, logs_url: str) -> Decision:
    """After a promotion: roll back to the baseline if the promoted version does worse, else
    hold until the watch is over and complete the rollout."""
    plan_analysis = AnalysisSpec.model_validate(r.plan["analysis"])
    elapsed = now - r.step_started_at
    duration = float(r.plan.get("watch_after_promotion") or 0.0)
    after = read_logs(logs_url, r.model, r.step_started_at, now)
    before = read_logs(logs_url, r.model, r.step_started_at - max(elapsed, 1.0), r.step_started_at)
    challenger = evidence(after, CHAMPION, r.version)
    baseline = evidence(before, CHAMPION, r.baseline or 0)
    verdict = _watch_verdict(store, r, now, logs_url, plan_analysis, baseline, challenger)
    if verdict.action == "rollback":
        reasons = [f"v{r.version} is worse than v{r.baseline} after promotion: {x}" for x in verdict.reasons]
        store.registry.set_alias(
            r.model,
            CHAMPION,
            r.baseline,
            actor=actor,
            expected=r.version,
            action="rollback",
            reason="; ".join(reasons)[:2000],
        )
        done = end(store, r, actor, now, "rollback", ROLLED_BACK, reasons, verdict=verdict.to_dict())
        return Decision("rollback", reasons, done, verdict.to_dict())
    if elapsed >= duration:
        reasons = [f"watched v{r.version} for {duration:.0f}s after promotion: nothing failed"]
        done = end(store, r, actor, now, "complete", PROMOTED, reasons, verdict=verdict.to_dict())
        return Decision("complete", reasons, done, verdict.to_dict())
    return _hold(store, r, actor, now, verdict)


def _watch_verdict(
    store: Store,
    r: Rollout,
    now: float,
    logs_url: str,
    plan_analysis: AnalysisSpec,
    baseline: Evidence,
    challenger: Evidence,
) -> analysis.Verdict:
    """``rollback`` if a check of the promoted version against its predecessor fails, else ``hold``.

    Latency and quality are not compared across time: load and data both change. Errors
    are (a model that starts failing requests is wrong at any load); quality is judged
    by scoring the old champion again on the rows the new one answered.
    """
    checks = [analysis.check_errors(baseline, challenger, plan_analysis)]
    if r.baseline is not None:
        paired = _replay_baseline(store, r, logs_url, now)
        if paired is not None:
            new, old, classification = paired
            judged = analysis.paired_quality if classification else analysis.paired_errors
            checks.append(judged(new, old, plan_analysis))
    failed = [c for c in checks if c.status == "fail"]
    return analysis.Verdict(
        "rollback" if failed else "hold",
        [c.detail for c in failed] or [f"watching v{r.version}: nothing failed so far"],
        checks,
        baseline.n,
        challenger.n,
    )


def judge_step(store: Store, r: Rollout, actor: str, now: float, logs_url: str) -> Decision:
    """A shadow or canary step: compare the candidate with the champion over the step's window,
    then roll back, hold, promote after the last step, or advance to the next one."""
    verdict = _step_verdict(r, now, logs_url)
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
        done = end(store, r, actor, now, "rollback", ROLLED_BACK, verdict.reasons, verdict=v)
        return Decision("rollback", verdict.reasons, done, v)
    if verdict.action == "hold":
        return _hold(store, r, actor, now, verdict)
    if verdict.action == "promote":
        store.registry.promote(
            r.model, r.version, actor=actor, expected=r.baseline, reason="; ".join(verdict.reasons)[:2000]
        )
        return after_promotion(store, r, actor, now, verdict.reasons, v)
    return _next_step(store, r, actor, now, verdict)


def _step_verdict(r: Rollout, now: float, logs_url: str) -> analysis.Verdict:
    """The analysis' verdict on the step, turned into a rollback when it stayed undecided too long."""
    plan_analysis = AnalysisSpec.model_validate(r.plan["analysis"])
    elapsed = now - r.step_started_at
    config, final = _step_config(r)
    logs = read_logs(logs_url, r.model, r.step_started_at, now)
    champion = evidence(logs, CHAMPION, r.baseline or 0)
    challenger = evidence(logs, r.phase, r.version)
    judge = functools.partial(
        analysis.compare,
        champion,
        challenger,
        plan_analysis,
        min_samples=int(config["min_samples"]),
        elapsed=elapsed,
        duration=float(config["duration"]),
        final=final,
        task=r.plan.get("task"),
    )
    verdict = judge(sequential=bool(r.plan.get("sequential")), proven=r.plan.get("proven"))
    limit = config.get("max_duration") or UNDECIDED_STEP_LIMIT * float(config["duration"])
    sequential = bool(r.plan.get("sequential")) and not plan_analysis.require_labels
    if verdict.action == "hold" and elapsed >= float(limit) and sequential:
        # The sequence held the step for evidence that did not come in time (labels late, a
        # close call). Sequential mode only adds early stops: at the limit the step gets the
        # verdict the plain plan gives, its fixed-sample checks (a challenger they show worse
        # is rolled back), never a stricter one.
        plain = judge()
        if plain.action != "hold":
            held = "; ".join(verdict.reasons)
            return analysis.Verdict(
                plain.action,
                [
                    f"the sequential test stayed undecided to the step's limit ({held}); "
                    "the plain checks decide",
                    *plain.reasons,
                ],
                plain.checks,
                plain.n_champion,
                plain.n_challenger,
            )
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
    return verdict


def _next_step(store: Store, r: Rollout, actor: str, now: float, verdict: analysis.Verdict) -> Decision:
    """Advance: from the shadow to the first canary step (the alias moves), or to the next canary step."""
    v = verdict.to_dict()
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
        moved = transition(
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
        moved = transition(
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
    held = transition(
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
