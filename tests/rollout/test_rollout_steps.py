"""The rollout state machine on a real store, with logs written by the serving log writer."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from servekit import FakeClock, classifier, register

from evertrain.data.logs import ERRORS, FEEDBACK, PREDICTIONS, LogWriter
from evertrain.exceptions import ConflictError, UsageError
from evertrain.rollout import abort_rollout, advance, get_active, promote_now, start_rollout
from evertrain.serve.models import read_desired
from evertrain.spec import AnalysisSpec, RolloutSpec, RolloutStep
from evertrain.store import Store

PLAN = RolloutSpec(
    shadow=RolloutStep(share=0.0, duration=60, min_samples=100),
    steps=[
        RolloutStep(share=0.1, duration=60, min_samples=100),
        RolloutStep(share=0.5, duration=60, min_samples=100),
    ],
    analysis=AnalysisSpec(min_labels=50, max_latency_increase=1.0),
    watch_after_promotion=120,
)


@pytest.fixture
def versions(store: Store) -> tuple[int, int]:
    v1 = register(store, "m", classifier(0))
    v2 = register(store, "m", classifier(1))
    store.registry.promote("m", v1, actor="test")
    return v1, v2


class Traffic:
    """Writes prediction, error and feedback rows as a serving replica would."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.writer = LogWriter(store.logs_url or "", flush_seconds=3600, batch_rows=10**9)
        self.clock = clock
        self.rng = np.random.default_rng(0)
        self.count = 0

    def rows(self, arm: str, version: int, n: int, *, accuracy: float = 0.9, errors: int = 0) -> None:
        ts = self.clock()
        ids = [f"r{self.count + i}" for i in range(n)]
        self.count += n
        preds = self.rng.integers(0, 2, n).astype(float)
        truth = np.where(self.rng.random(n) < accuracy, preds, 1 - preds)
        cols = {
            "request_id": ids,
            "ts": [ts] * n,
            "model_version": [version] * n,
            "arm": [arm] * n,
            "latency_ms": list(self.rng.gamma(9.0, 1 / 9.0, n)),
            "prediction": list(preds),
            "score": [0.5] * n,
        }
        types = {
            "request_id": "string",
            "ts": "float64",
            "model_version": "int64",
            "arm": "string",
            "latency_ms": "float64",
            "prediction": "float64",
            "score": "float64",
        }
        self.writer.offer(PREDICTIONS, "m", cols, types, n)
        self.writer.offer(
            FEEDBACK,
            "m",
            {"request_id": ids, "label": list(truth), "ts": [ts] * n},
            {"request_id": "string", "label": "float64", "ts": "float64"},
            n,
        )
        if errors:
            err = {
                "request_id": [f"e{self.count + i}" for i in range(errors)],
                "ts": [ts] * errors,
                "model_version": [version] * errors,
                "arm": [arm] * errors,
                "latency_ms": [1.0] * errors,
                "kind": ["model"] * errors,
                "error": ["boom"] * errors,
            }
            self.writer.offer(
                ERRORS,
                "m",
                err,
                {
                    k: "string"
                    if k in ("request_id", "arm", "kind", "error")
                    else "int64"
                    if k == "model_version"
                    else "float64"
                    for k in err
                },
                errors,
            )
        self.writer.close()  # written now (a new writer takes the next rows)
        self.writer = LogWriter(self.writer.url, flush_seconds=3600, batch_rows=10**9)


def test_shadow_then_canary_steps_then_promotion_and_watch(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    v1, v2 = versions
    traffic = Traffic(store, clock)
    r = start_rollout(store, "m", v2, actor="ctl", rollout_spec=PLAN, task="binary")
    assert (r.phase, r.share, store.registry.get_aliases("m")) == (
        "shadow",
        0.0,
        {"champion": v1, "shadow": v2},
    )

    assert advance(store, "m", actor="ctl").action == "hold"  # no evidence yet
    assert advance(store, "m", actor="ctl").action == "hold"
    clock.advance(1)
    traffic.rows("champion", v1, 300)
    traffic.rows("shadow", v2, 300)
    clock.advance(30)
    assert advance(store, "m", actor="ctl").action == "hold"  # enough rows, not enough time
    clock.advance(40)
    d = advance(store, "m", actor="ctl")
    assert d.action == "advance", d.reasons
    assert (d.rollout.phase, d.rollout.step, d.rollout.share) == ("canary", 0, 0.1)
    assert store.registry.get_aliases("m") == {"champion": v1, "shadow": None, "canary": v2}
    assert read_desired(store, "m").share == 0.1

    for share in (0.5, None):
        clock.advance(1)
        traffic.rows("champion", v1, 300)
        traffic.rows("canary", v2, 150)
        clock.advance(70)
        d = advance(store, "m", actor="ctl")
        if share is not None:
            assert (d.action, d.rollout.step, d.rollout.share) == ("advance", 1, share)
            assert read_desired(store, "m").share == share
    assert d.action == "promote", d.reasons
    assert d.rollout.phase == "watching"
    assert store.registry.get_aliases("m") == {"champion": v2, "shadow": None, "canary": None}

    clock.advance(1)
    traffic.rows("champion", v2, 300)
    clock.advance(130)
    d = advance(store, "m", actor="ctl")
    assert (d.action, d.rollout.phase, d.rollout.outcome) == ("complete", "done", "promoted")
    assert get_active(store, "m") is None
    actions = [e.action for e in store.audit.entries() if e.subject.startswith("model/m/rollout")]
    assert actions == [
        "rollout_start",
        "rollout_hold",
        "rollout_advance",
        "rollout_advance",
        "rollout_promote",
        "rollout_complete",
    ]
    assert store.audit.verify().ok


def test_a_canary_worse_in_quality_is_rolled_back_in_one_alias_move(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    v1, v2 = versions
    traffic = Traffic(store, clock)
    start_rollout(store, "m", v2, actor="ctl", rollout_spec=PLAN.model_copy(update={"shadow": None}))
    clock.advance(1)
    traffic.rows("champion", v1, 400, accuracy=0.95)
    traffic.rows("canary", v2, 150, accuracy=0.55)
    clock.advance(5)  # before the step's duration: a failed check does not wait for it
    d = advance(store, "m", actor="ctl")
    assert (d.action, d.rollout.outcome) == ("rollback", "rolled_back")
    assert "accuracy" in d.reasons[0]
    assert store.registry.get_aliases("m") == {"champion": v1, "canary": None}
    last = store.registry.history("m", "canary")[-1]
    assert (last.action, last.from_version, last.to_version) == ("rollback", v2, None)


def test_a_version_that_fails_after_promotion_is_rolled_back_to_its_baseline(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    v1, v2 = versions
    traffic = Traffic(store, clock)
    plan = RolloutSpec(steps=[RolloutStep(share=0.5, duration=10, min_samples=50)], watch_after_promotion=600)
    start_rollout(store, "m", v2, actor="ctl", rollout_spec=plan)
    clock.advance(1)
    traffic.rows("champion", v1, 200)
    traffic.rows("canary", v2, 200)
    clock.advance(20)
    assert advance(store, "m", actor="ctl").action == "promote"
    clock.advance(1)
    traffic.rows("champion", v2, 200, errors=60)
    clock.advance(5)
    d = advance(store, "m", actor="ctl")
    assert (d.action, d.rollout.outcome) == ("rollback", "rolled_back")
    assert store.registry.get_alias("m", "champion") == v1
    assert store.registry.history("m", "champion")[-1].action == "rollback"


def test_an_early_sequential_promotion_is_still_watched_and_rolled_back_when_it_fails(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    v1, v2 = versions
    traffic = Traffic(store, clock)
    plan = RolloutSpec(
        steps=[RolloutStep(share=0.1, duration=600, min_samples=50), RolloutStep(share=0.5, duration=600)],
        analysis=AnalysisSpec(min_labels=50, max_latency_increase=1.0),
        watch_after_promotion=600,
    )
    start_rollout(store, "m", v2, actor="ctl", rollout_spec=plan, decay="performance: accuracy fell")
    clock.advance(1)
    traffic.rows("champion", v1, 300, accuracy=0.55)
    traffic.rows("canary", v2, 300, accuracy=0.97)
    clock.advance(5)
    d = advance(store, "m", actor="ctl")
    # promoted on the first step, long before its time is up, and watched rather than done
    assert d.action == "promote" and "sequential" in d.reasons[0]
    assert d.rollout.phase == "watching" and store.registry.get_alias("m", "champion") == v2
    clock.advance(1)
    traffic.rows("champion", v2, 200, errors=60)
    clock.advance(5)
    d = advance(store, "m", actor="ctl")
    assert (d.action, d.rollout.outcome) == ("rollback", "rolled_back")
    assert store.registry.get_alias("m", "champion") == v1


def test_a_version_tried_on_more_data_and_shown_better_is_promoted_at_its_canarys_first_look(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    """No decay: the champion is fine, but a canary of several steps would hold every
    trigger of the loop; the gate's evidence stands for the labels, as after a decay."""
    v1, v2 = versions
    traffic = Traffic(store, clock)
    plan = RolloutSpec(
        steps=[RolloutStep(share=0.1, duration=600, min_samples=200), RolloutStep(share=0.5, duration=600)]
    )
    gate = "the gate found accuracy 0.930 vs the champion's 0.900 on 1000 holdout rows"
    start_rollout(store, "m", v2, actor="ctl", rollout_spec=plan, more_data="tried on more data", proven=gate)
    clock.advance(1)
    traffic.rows("champion", v1, 90)
    traffic.rows("canary", v2, 10)
    clock.advance(5)
    d = advance(store, "m", actor="ctl")
    assert d.action == "promote" and gate in d.reasons[0] and "without waiting for its labels" in d.reasons[0]
    assert d.rollout.plan["more_data"] == "tried on more data" and d.rollout.phase == "watching"
    # tried on more data but not shown better (or no gate evidence): the plain canary, step by step
    start_rollout(store, "m", v1, actor="ctl", rollout_spec=plan, more_data="tried on more data")
    clock.advance(1)
    traffic.rows("champion", v2, 90)
    traffic.rows("canary", v1, 10)
    clock.advance(5)
    d = advance(store, "m", actor="ctl")
    assert d.action == "hold" and not d.rollout.plan["sequential"]


def test_a_version_shown_better_after_a_decay_starts_its_canary_at_the_largest_step(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    """The stale champion keeps only the traffic the plan's last step leaves it; errors
    still roll the canary back at its first look."""
    v1, v2 = versions
    traffic = Traffic(store, clock)
    plan = RolloutSpec(
        steps=[RolloutStep(share=0.1, duration=600, min_samples=50), RolloutStep(share=0.5, duration=600)]
    )
    gate = "the gate found accuracy 0.950 vs the champion's 0.600 on 1000 holdout rows"
    r = start_rollout(store, "m", v2, actor="ctl", rollout_spec=plan, decay="accuracy fell", proven=gate)
    assert (r.phase, r.share) == ("canary", 0.5) and read_desired(store, "m").share == 0.5
    assert [s["share"] for s in r.plan["skipped_steps"]] == [0.1]
    clock.advance(1)
    traffic.rows("champion", v1, 100)
    traffic.rows("canary", v2, 100, errors=30)
    clock.advance(5)
    d = advance(store, "m", actor="ctl")
    assert (d.action, d.rollout.outcome) == ("rollback", "rolled_back")
    assert store.registry.get_alias("m", "champion") == v1
    # after a decay but not shown better: the plan's steps as written, the smallest first
    r = start_rollout(store, "m", v2, actor="ctl", rollout_spec=plan, decay="accuracy fell")
    assert r.share == 0.1 and r.plan["skipped_steps"] == []


def test_a_sequential_canary_undecided_at_its_limit_gets_the_plain_plans_verdict(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    v1, v2 = versions
    traffic = Traffic(store, clock)
    plan = RolloutSpec(
        steps=[RolloutStep(share=0.5, duration=10, min_samples=50, max_duration=100)],
        analysis=AnalysisSpec(min_labels=50, max_latency_increase=1.0),
        watch_after_promotion=600,
    )
    start_rollout(store, "m", v2, actor="ctl", rollout_spec=plan, decay="performance: accuracy fell")
    clock.advance(1)
    traffic.rows("champion", v1, 150, accuracy=0.85)
    traffic.rows("canary", v2, 150, accuracy=0.85)
    clock.advance(20)
    d = advance(store, "m", actor="ctl")
    assert d.action == "hold" and "not yet decided" in " ".join(d.reasons)  # the sequence waits for evidence
    clock.advance(100)
    d = advance(store, "m", actor="ctl")
    # at the limit it is judged as without sequential mode: nothing failed, so it is promoted and watched
    assert d.action == "promote" and "undecided" in d.reasons[0]
    assert d.rollout.phase == "watching" and store.registry.get_alias("m", "champion") == v2


def test_hand_moves_are_reconciled_and_conflicts_refused(
    store: Store, clock: FakeClock, versions: tuple[int, int]
) -> None:
    _v1, v2 = versions
    start_rollout(store, "m", v2, actor="ctl", rollout_spec=PLAN)
    with pytest.raises(ConflictError):
        start_rollout(store, "m", v2, actor="ctl", rollout_spec=PLAN)
    store.registry.set_alias("m", "shadow", None, actor="someone")  # an operator pulls the shadow
    d = advance(store, "m", actor="ctl")
    assert (d.action, d.rollout.outcome) == ("abort", "aborted")

    start_rollout(
        store, "m", v2, actor="ctl", rollout_spec=PLAN.model_copy(update={"watch_after_promotion": 0})
    )
    promote_now(store, "m", v2, actor="someone", reason="ship it")
    assert get_active(store, "m") is None
    with pytest.raises(UsageError):
        abort_rollout(store, "m", actor="ctl")
    with pytest.raises(UsageError):
        start_rollout(store, "m", v2, actor="ctl")  # already the champion


def test_the_rollouts_migration_and_the_table_declaration_agree(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from evertrain.store.metadata import metadata

    with store.db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        assert [d for d in diffs if "rollouts" in repr(d)] == []
        assert "rollouts" in sa.inspect(conn).get_table_names()
