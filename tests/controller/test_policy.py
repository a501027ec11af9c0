"""Retraining policy: triggers fire on evidence, noise and repetition are held back."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from evertrain.controller.policy import History, Observation, cron_due, decide, record_training_time
from evertrain.spec import Spec

DAY = 86400.0
T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()  # a Monday


def make_spec(*, persist: bool = False, **overrides: object) -> Spec:
    """A spec with ``overrides``; unless ``persist``, one window suffices for drift and decay,
    so that each test looks at one rule (persistence has tests of its own)."""
    base: dict[str, object] = {
        "model": {"name": "m", "target": "y"},
        "data": {"source": {"kind": "csv", "path": "d.csv"}},
    }
    base.update(overrides)
    if not persist:
        triggers = dict(base.get("triggers") or {})  # type: ignore[call-overload]
        triggers["drift"] = {"consecutive": 1, **triggers.get("drift", {})}
        triggers["performance"] = {"consecutive": 1, **triggers.get("performance", {})}
        base["triggers"] = triggers
    return Spec.model_validate(base)


def test_quiet_window_does_nothing() -> None:
    decision, _ = decide(
        make_spec(), Observation(at=T0, share_drifted=0.0, metric=0.9, baseline=0.9, n_labels=500), History()
    )
    assert decision.action == "none"
    assert decision.triggers == []


def test_drift_needs_consecutive_windows_then_fires_once_per_episode() -> None:
    spec = make_spec(
        triggers={"drift": {"share_drifted": 0.3, "consecutive": 2, "min_labels_after": 0}},
        policy={"cooldown": 0},
    )
    obs = Observation(at=T0, share_drifted=0.5, drifted_columns=("x1",), reference_id="ref1")
    first, h = decide(spec, obs, History())
    assert first.action == "none" and h.drift_streak == 1
    second, h = decide(spec, obs, h)
    assert second.action == "retrain" and "drift" in second.triggers
    assert "x1" in second.reasons[0]
    third, h = decide(spec, obs, h)  # the same episode goes on: hysteresis holds it
    assert third.action == "none"
    assert any("already retrained" in r for r in third.held)
    # a column that was not drifting before is new evidence
    wider = Observation(at=T0 + 60, share_drifted=0.75, drifted_columns=("x1", "x3"), reference_id="ref1")
    fourth, _ = decide(spec, wider, h)
    assert fourth.action == "retrain"


def test_drift_retrain_waits_for_labels_from_after_the_drift() -> None:
    spec = make_spec(triggers={"drift": {"min_labels_after": 300}}, policy={"cooldown": 0})
    onset = Observation(at=T0, share_drifted=0.5, drifted_columns=("x3",), reference_id="r")
    first, h = decide(spec, onset, History())
    assert first.action == "none"
    assert "waiting for labelled rows" in first.held[0] and "0 of 300" in first.held[0]
    assert h.pending_onset == T0
    # drift can fade from view while labels come in; the pending episode is kept
    later = Observation(at=T0 + 3600, share_drifted=0.0, reference_id="r", labels_after_onset=120)
    second, h = decide(spec, later, h)
    assert second.action == "none" and "120 of 300" in second.held[0]
    ready = Observation(
        at=T0 + 7200, share_drifted=0.5, drifted_columns=("x3",), reference_id="r", labels_after_onset=400
    )
    third, h = decide(spec, ready, h)
    assert third.action == "retrain" and third.triggers == ["drift"]
    assert "400 labelled rows since it began" in third.reasons[0]
    assert h.pending_onset is None and h.episode_columns == ["x3"]
    again, _ = decide(spec, ready, h)
    assert again.action == "none"


def test_a_new_reference_starts_a_new_episode() -> None:
    spec = make_spec(triggers={"drift": {"min_labels_after": 0}}, policy={"cooldown": 0})
    obs = Observation(at=T0, share_drifted=0.5, drifted_columns=("x1",), reference_id="r1")
    first, h = decide(spec, obs, History())
    assert first.action == "retrain"
    promoted = Observation(at=T0 + 60, share_drifted=0.5, drifted_columns=("x1",), reference_id="r2")
    second, _ = decide(spec, promoted, h)
    assert second.action == "retrain"


def test_performance_decay_needs_enough_labels() -> None:
    spec = make_spec(triggers={"performance": {"drop": 0.05, "min_labels": 200}})
    few, _ = decide(spec, Observation(at=T0, metric=0.6, baseline=0.9, n_labels=50), History())
    assert few.action == "none" and "only 50 labels" in few.held[0]
    enough, _ = decide(spec, Observation(at=T0, metric=0.6, baseline=0.9, n_labels=400), History())
    assert enough.action == "retrain" and enough.triggers == ["performance"]
    small_dip, _ = decide(spec, Observation(at=T0, metric=0.87, baseline=0.9, n_labels=400), History())
    assert small_dip.action == "none"


def test_a_decay_must_be_statistically_clear_and_larger_than_the_drop() -> None:
    """The default test: realized accuracy below baseline - drop, significantly, with the
    doubt of both the realized rows and the holdout rows behind the baseline."""
    spec = make_spec()
    slow = Observation(at=T0, metric=0.80, baseline=0.86, baseline_rows=833, n_labels=1000)
    fired, _ = decide(spec, slow, History())
    assert fired.action == "retrain" and "one-sided test at 95%" in fired.reasons[0]
    # the same loss on few rows, or against a baseline measured on few rows, is noise
    few = Observation(at=T0, metric=0.82, baseline=0.86, baseline_rows=833, n_labels=200)
    assert decide(spec, few, History())[0].action == "none"
    unsure = Observation(at=T0, metric=0.80, baseline=0.86, baseline_rows=60, n_labels=1000)
    assert decide(spec, unsure, History())[0].action == "none"
    # a loss within the drop is never a decay, however many rows show it
    tiny = Observation(at=T0, metric=0.992, baseline=1.0, baseline_rows=100_000, n_labels=100_000)
    assert decide(spec, tiny, History())[0].action == "none"
    # confidence: null compares the realized value with baseline - drop alone
    plain = make_spec(triggers={"performance": {"confidence": None}})
    assert decide(plain, few, History())[0].action == "retrain"


def test_a_lucky_holdout_is_pooled_with_the_first_rows_served_so_it_stops_reading_as_a_decay() -> None:
    """A baseline of 0.634 on 41 holdout rows, a model that serves at 0.49: against the
    holdout alone every window is a decay; pooled with its first 200 labelled rows in
    service, the reference is 0.514 and 0.48 is no clear loss. A real decay still shows; a
    holdout as large as the decay test's own rows is kept as it is, and so is one the first
    rows served are clearly below."""
    spec = make_spec()
    lucky = {"at": T0, "metric": 0.48, "n_labels": 225, "baseline": 0.634, "baseline_rows": 41}
    assert decide(spec, Observation(**lucky), History())[0].action == "retrain"
    pooled = Observation(**lucky, champion_version=3, first_served=0.49, first_served_rows=200)
    decision, h = decide(spec, pooled, History())
    assert decision.action == "none"
    assert h.first_served == {"version": 3, "value": 0.49, "rows": 200}  # read once per version
    # a real decay from a small holdout still shows (first rows served at 0.90, now 0.60), and a
    # holdout of 1,000 rows is a sound reference that a first season served at 0.85 does not move
    served = {"at": T0, "n_labels": 1000, "first_served_rows": 200}
    real = Observation(**served, metric=0.60, baseline=0.95, baseline_rows=60, first_served=0.90)
    decision, _ = decide(spec, real, History())
    assert decision.action == "retrain" and "first 200 labelled rows in service" in decision.reasons[0]
    sound = Observation(**served, metric=0.765, baseline=0.80, baseline_rows=1000, first_served=0.85)
    assert decide(spec, sound, History())[0].action == "none"
    # first rows served far below a small holdout (0.60 against 0.87 on 133 rows) are no chance:
    # the model decays from its first day, and the holdout stays the reference
    drifting = Observation(**served, metric=0.60, baseline=0.87, baseline_rows=133, first_served=0.60)
    decision, _ = decide(spec, drifting, History())
    assert decision.action == "retrain" and "first 200" not in decision.reasons[0]


def test_cooldown_and_daily_cap_hold_triggers_but_not_manual() -> None:
    spec = make_spec(policy={"cooldown": "6h", "max_retrains_per_day": 1})
    obs = Observation(at=T0, metric=0.5, baseline=0.9, n_labels=1000)
    first, h = decide(spec, obs, History())
    assert first.action == "retrain"
    later = Observation(at=T0 + 3600, metric=0.5, baseline=0.9, n_labels=1000)
    held, h2 = decide(spec, later, h)
    assert held.action == "none" and held.held[0].startswith("cooldown")
    after_cooldown = Observation(at=T0 + 7 * 3600, metric=0.5, baseline=0.9, n_labels=1000)
    capped, _ = decide(spec, after_cooldown, h2)
    assert capped.action == "none" and capped.held[0].startswith("budget")
    manual, _ = decide(spec, later, h2, manual="new features shipped")
    assert manual.action == "retrain" and "manual" in manual.triggers


def test_compute_budget_holds_even_manual() -> None:
    spec = make_spec(training={"budget": {"daily_train_seconds": 100}}, policy={"cooldown": 0})
    h = record_training_time(History(), T0, 150.0)
    decision, _ = decide(spec, Observation(at=T0 + 10), h, manual="please")
    assert decision.action == "none" and decision.held[0].startswith("compute budget")


def test_schedule_every_and_volume() -> None:
    spec = make_spec(
        triggers={"schedule": {"every": "1d"}, "volume": {"new_labelled_rows": 1000}},
        policy={"cooldown": 0, "max_retrains_per_day": 10},
    )
    d1, h = decide(spec, Observation(at=T0), History())
    assert d1.triggers == ["schedule"]
    d2, h = decide(spec, Observation(at=T0 + 3600, new_labelled_rows=999), h)
    assert d2.action == "none"
    d3, _ = decide(spec, Observation(at=T0 + 7200, new_labelled_rows=1000), h)
    assert d3.triggers == ["volume"]


@pytest.mark.parametrize(
    ("cron", "last", "now", "due"),
    [
        ("0 3 * * *", T0, T0 + DAY, True),  # 03:00 passed since yesterday noon
        ("0 3 * * *", T0, T0 + 3600, False),
        ("*/15 * * * *", T0, T0 + 900, True),
        ("0 12 * * 0", T0, T0 + 5 * DAY, False),  # Sunday noon not yet reached by Saturday
        ("0 12 * * 0", T0, T0 + 6 * DAY, True),
        # names, as cron writes them: Tuesday 03:00 comes after Monday noon, Monday's did not
        ("0 3 * * TUE", T0, T0 + 15 * 3600, True),
        ("0 3 * * MON", T0, T0 + 15 * 3600, False),
        ("0 3 * * MON", T0, T0 + 7 * DAY, True),
        ("0 0 1 APR *", T0, T0 + 31 * DAY, True),  # April 1st, 00:00
        ("@daily", T0, T0 + 11 * 3600, False),  # midnight not yet reached
        ("@daily", T0, T0 + 12 * 3600, True),  # midnight exactly: (last, now] includes now
        ("@hourly", T0, T0 + 3599, False),
        ("@hourly", T0, T0 + 3600, True),
        ("0 3 * * *", None, T0 - 9 * 3600 + 30, True),  # no last: a time in the last minute
        ("0 3 * * *", None, T0, False),
    ],
)
def test_cron(cron: str, last: float | None, now: float, due: bool) -> None:
    assert cron_due(cron, last, now) is due


def _fire_days(cron: str, days: int) -> list[int]:
    """Days of March 2026 on which ``cron`` fires, checked one day at a time."""
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
    return [
        day + 1 for day in range(days) if cron_due(cron, start + (day - 1) * DAY + 60, start + day * DAY + 60)
    ]


def test_cron_day_of_month_or_day_of_week() -> None:
    # cron's rule: when both day fields are restricted, a day matches either of them.
    # March 2026: Fridays are the 6th, 13th, 20th, 27th; the 13th is itself a Friday.
    assert _fire_days("0 0 13 * FRI", 31) == [6, 13, 20, 27]
    assert _fire_days("0 0 1,15 * MON", 31) == [1, 2, 9, 15, 16, 23, 30]
    # one restricted day field alone restricts alone
    assert _fire_days("0 0 * * FRI", 31) == [6, 13, 20, 27]
    assert _fire_days("0 0 15 * *", 31) == [15]


def test_bad_cron_is_refused() -> None:
    with pytest.raises(ValueError, match="has 3 fields"):
        cron_due("* * *", None, T0)
    with pytest.raises(ValueError, match="out of range"):
        cron_due("99 * * * *", None, T0)


def test_cron_schedule_fires_after_the_loop_first_sees_it() -> None:
    # Monday 12:00 first look: nothing owed for the Monday 03:00 already past; the loop
    # every hour then retrains at the first look after Tuesday 03:00, and once only
    spec = make_spec(triggers={"schedule": {"cron": "0 3 * * *"}}, policy={"cooldown": 0})
    history = History()
    fired = {}
    for hour in range(0, 30):
        decision, history = decide(spec, Observation(at=T0 + hour * 3600 + 600), history)
        if decision.action == "retrain":
            fired[hour] = decision.reasons
    assert fired == {15: ["schedule: cron '0 3 * * *'"]}  # 03:10 on Tuesday, the first look after 03:00


def test_a_drift_whose_labels_show_no_loss_is_recorded_not_retrained_for() -> None:
    spec = make_spec(triggers={"drift": {"min_labels_after": 300}}, policy={"cooldown": 0})
    onset = Observation(at=T0, share_drifted=0.5, drifted_columns=("x1",), reference_id="r")
    _, h = decide(spec, onset, History())
    # the champion does as well on the rows since the drift began as when it was trained
    harmless = Observation(
        at=T0 + 3600,
        share_drifted=0.5,
        drifted_columns=("x1",),
        reference_id="r",
        labels_after_onset=500,
        metric_after_onset=0.88,
        baseline=0.9,
    )
    decision, h = decide(spec, harmless, h)
    assert decision.action == "none" and decision.triggers == []
    assert "the inputs moved, the predictions held" in decision.held[0] and "0.880" in decision.held[0]
    assert h.pending_onset is None and h.episode_outcome == "harmless" and h.episode_columns == ["x1"]
    later, _ = decide(spec, harmless, h)  # the same shift goes on: not looked at again
    assert later.action == "none" and "showed no loss" in later.held[0]


def test_a_drift_whose_labels_show_a_loss_retrains_on_the_rows_after_it() -> None:
    spec = make_spec(triggers={"drift": {"min_labels_after": 300}}, policy={"cooldown": 0})
    onset = Observation(
        at=T0, share_drifted=0.5, drifted_columns=("x1",), reference_id="r", window_start=T0 - 60
    )
    _, h = decide(spec, onset, History())
    hurt = Observation(
        at=T0 + 3600,
        share_drifted=0.5,
        drifted_columns=("x1",),
        reference_id="r",
        labels_after_onset=500,
        metric_after_onset=0.7,
        baseline=0.9,
    )
    decision, h = decide(spec, hurt, h)
    assert decision.action == "retrain" and decision.triggers == ["drift"]
    assert decision.since == T0 - 60
    assert "accuracy is 0.700 (baseline 0.900)" in decision.reasons[0]
    assert h.episode_outcome == "retrained"
    # without confirmation the same labels are not asked
    unconfirmed = make_spec(
        triggers={"drift": {"min_labels_after": 300, "confirm": False}}, policy={"cooldown": 0}
    )
    _, h = decide(unconfirmed, onset, History())
    harmless = Observation(
        at=T0 + 3600,
        share_drifted=0.5,
        drifted_columns=("x1",),
        reference_id="r",
        labels_after_onset=500,
        metric_after_onset=0.9,
        baseline=0.9,
    )
    assert decide(unconfirmed, harmless, h)[0].action == "retrain"


def test_a_retrain_for_decay_learns_from_where_the_decay_showed() -> None:
    obs = Observation(at=T0, metric=0.6, baseline=0.9, n_labels=1000, realized_since=T0 - 7200)
    decision, _ = decide(make_spec(), obs, History())
    assert decision.action == "retrain" and decision.since == T0 - 7200
    window = make_spec(triggers={"performance": {"learn_from": "window"}})
    assert decide(window, obs, History())[0].since is None


def test_the_performance_trigger_knows_which_way_its_metric_improves() -> None:
    """A regression model's default metric is RMSE, where higher is worse."""
    spec = make_spec(model={"name": "m", "target": "y", "task": "regression"}, policy={"cooldown": 0})
    decayed, _ = decide(spec, Observation(at=T0, metric=1.30, baseline=1.00, n_labels=500), History())
    assert decayed.triggers == ["performance"]
    assert "rmse 1.300 is above the baseline 1.000" in decayed.reasons[0]
    better, _ = decide(spec, Observation(at=T0, metric=0.70, baseline=1.00, n_labels=500), History())
    assert better.action == "none"
    # A classifier watching ROC AUC: lower is worse.
    auc = make_spec(triggers={"performance": {"metric": "roc_auc", "drop": 0.02}}, policy={"cooldown": 0})
    fell, _ = decide(auc, Observation(at=T0, metric=0.80, baseline=0.85, n_labels=500), History())
    assert fell.triggers == ["performance"] and "roc_auc 0.800 is below" in fell.reasons[0]


def test_a_one_window_spell_does_not_trigger_a_retrain() -> None:
    """A stormy week: the inputs drift and the champion fails for one window, then all is as before."""
    spec = make_spec(persist=True, policy={"cooldown": 0})
    calm = Observation(
        at=T0, share_drifted=0.0, metric=0.9, baseline=0.9, n_labels=1000, metric_parts=(0.9, 0.9)
    )
    h = History()
    _, h = decide(spec, calm, h)
    storm = Observation(
        at=T0 + 3600,
        window_start=T0,
        share_drifted=0.6,
        drifted_columns=("x1", "x2"),
        reference_id="r",
        metric=0.75,
        baseline=0.9,
        n_labels=1000,
        metric_parts=(0.9, 0.6),  # the older half calm, the newest half stormy
        labels_after_onset=500,
        metric_after_onset=0.6,
    )
    during, h = decide(spec, storm, h)
    assert during.action == "none"
    assert any("not in each of 2 consecutive parts" in x for x in during.held)
    after = Observation(
        at=T0 + 7200,
        window_start=T0 + 3600,
        share_drifted=0.0,
        reference_id="r",
        metric=0.75,
        baseline=0.9,
        n_labels=1000,
        metric_parts=(0.6, 0.9),  # the spell is over in the newest labels
    )
    later, h = decide(spec, after, h)
    assert later.action == "none" and h.pending_onset is None


def test_a_lasting_decay_retrains_and_learns_from_its_first_window_on() -> None:
    spec = make_spec(persist=True, policy={"cooldown": 0})
    common = {"reference_id": "r", "drifted_columns": ("x1",), "share_drifted": 0.6, "baseline": 0.9}
    first, h = decide(
        spec,
        Observation(
            at=T0, window_start=T0 - 3600, metric=0.8, n_labels=1000, metric_parts=(0.9, 0.7), **common
        ),
        History(),
    )
    assert first.action == "none"
    second, h = decide(
        spec,
        Observation(
            at=T0 + 3600,
            window_start=T0,
            metric=0.7,
            n_labels=1000,
            metric_parts=(0.7, 0.7),
            labels_after_onset=1000,
            metric_after_onset=0.7,
            **common,
        ),
        h,
    )
    assert second.action == "retrain" and {"drift", "performance"} <= set(second.triggers)
    assert second.since == T0 - 3600  # the first drifted window, not the one that confirmed it


def test_a_decay_still_deepening_is_retrained_for_once_it_levels_off() -> None:
    """A gradual change under way: the champion's accuracy falls from part to part of its newest
    labelled rows. Retrained for now, the rows since it began still mostly hold the old concept
    and the challenger gives the champion's answers again; once the parts agree it is retrained for."""
    spec = make_spec(persist=True, policy={"cooldown": 0})
    falling = champion_obs(T0, new=5000, metric=0.90, baseline=0.99, metric_parts=(0.94, 0.86))
    held, h = decide(spec, falling, History())
    assert held.action == "none"  # no try on more data either: a decay is being dealt with
    assert any("still falling (0.940 then 0.860 on 500 rows each)" in x for x in held.held)
    settled = champion_obs(
        T0 + 3600, new=5500, metric=0.61, baseline=0.99, metric_parts=(0.62, 0.60), realized_since=T0
    )
    decision, _ = decide(spec, settled, h)
    assert decision.action == "retrain" and decision.triggers == ["performance"]
    assert decision.since == T0
    # a slow decay, its parts within the drop of each other, is retrained for at once
    slow = champion_obs(T0, new=5000, metric=0.895, baseline=0.99, metric_parts=(0.90, 0.89))
    assert decide(spec, slow, History())[0].triggers == ["performance"]
    # so is an abrupt change once the rows after it fill both parts
    abrupt = champion_obs(T0, new=5000, metric=0.52, baseline=0.99, metric_parts=(0.53, 0.51))
    assert decide(spec, abrupt, History())[0].triggers == ["performance"]


def champion_obs(at: float, *, new: int, version: int = 1, rows: int = 2500, **more: object) -> Observation:
    """A quiet window of a champion that learned from ``rows``, ``new`` labelled rows after its training."""
    quiet: dict[str, Any] = {"share_drifted": 0.0, "metric": 0.9, "baseline": 0.9, "n_labels": 1000}
    return Observation(
        at=at,
        baseline_rows=1000,
        champion_version=version,
        champion_rows=rows,
        labels_since_champion=new,
        **{**quiet, **more},
    )


def test_more_data_tries_a_larger_window_once_it_can_double_and_again_as_the_rows_double() -> None:
    spec = make_spec()
    early, h = decide(spec, champion_obs(T0, new=2000), History())
    assert early.action == "none"  # 4,500 rows: not yet twice the champion's 2,500
    ready, h = decide(spec, champion_obs(T0 + 3600, new=2500), h)
    assert ready.action == "retrain" and ready.triggers == ["more_data"]
    assert ready.reasons[0].startswith("more data: 2500 labelled rows arrived since v1")
    assert "a window of 5000 rows (2.0x)" in ready.reasons[0] and "gate must show" in ready.reasons[0]
    assert h.more_data_version == 1 and h.more_data_rows == 5000
    # the same champion is kept (the gate rejected the challenger): the window is full at
    # 5,000 rows, and it is tried again only once the rows to draw on have doubled again
    # (2,500 + 7,500), on a window that has turned over since, then at 20,000, 40,000 ...
    tries = []
    for k in range(1, 40):  # 1,000 new rows a day
        decision, h = decide(spec, champion_obs(T0 + k * DAY, new=2500 + 1000 * k), h)
        if decision.action == "retrain":
            tries.append(h.more_data_rows)
            assert "did not replace it" in decision.reasons[0]
            assert "a window of 5000 rows (2.0x)" in decision.reasons[0]
    assert tries == [10_000, 20_000, 40_000]
    # a challenger the gate kept for a look on newer rows is not dropped for a new try
    looking = replace(h, second_look={"version": 5, "champion": 1, "looks": 0})
    assert decide(spec, champion_obs(T0 + 45 * DAY, new=80_000), looking)[0].action == "none"
    assert decide(spec, champion_obs(T0 + 45 * DAY, new=80_000), h)[0].action == "retrain"
    # a new champion trained on a window of 1,000 may grow fourfold: tried at 4,000 rows,
    # then not before 8,000
    young = champion_obs(T0 + 50 * DAY, new=3000, version=2, rows=1000)
    decision, h = decide(spec, young, h)
    assert decision.triggers == ["more_data"] and decision.since is None
    assert h.more_data_version == 2 and h.more_data_rows == 4000
    assert decide(spec, champion_obs(T0 + 51 * DAY, new=6000, version=2, rows=1000), h)[0].action == "none"
    assert decide(spec, champion_obs(T0 + 52 * DAY, new=7000, version=2, rows=1000), h)[0].action == "retrain"


def test_more_data_tries_are_bounded_on_an_unbounded_window() -> None:
    """With an expanding window each try for the same champion needs twice the rows of the last."""
    spec = make_spec(training={"window": {"kind": "expanding"}}, policy={"cooldown": 0})
    h, tries = History(), []
    for k in range(400):  # 400 cycles of 500 new rows each: 200,000 rows
        decision, h = decide(spec, champion_obs(T0 + k * DAY, new=500 * (k + 1)), h)
        if decision.action == "retrain":
            tries.append(h.more_data_rows)
    assert tries == [5000, 10_000, 20_000, 40_000, 80_000, 160_000]


def test_more_data_waits_while_a_decay_or_a_drift_is_dealt_with() -> None:
    spec = make_spec(persist=True, policy={"cooldown": 0})
    # a decay in the average that is not yet in each part of the rows: a spell, held, and no guess
    spell = champion_obs(T0, new=5000, metric=0.80, metric_parts=(0.95, 0.65))
    decision, _ = decide(spec, spell, History())
    assert decision.action == "none" and "a spell" in decision.held[0]
    # a drift that waits for its labels is coming: the guess waits too
    drift = make_spec(triggers={"drift": {"min_labels_after": 300}}, policy={"cooldown": 0})
    onset = champion_obs(T0, new=5000, share_drifted=0.5, drifted_columns=("x1",), reference_id="r")
    waiting, _ = decide(drift, onset, History())
    assert waiting.action == "none" and "waiting for labelled rows" in waiting.held[0]
    off = make_spec(triggers={"more_data": {"enabled": False}})
    assert decide(off, champion_obs(T0, new=5000), History())[0].action == "none"


def test_more_data_waits_while_a_drift_of_the_inputs_is_building() -> None:
    """Inputs that drift in one window, with two in a row needed: the try would learn from inputs
    on the move before their labels said whether the champion handles them. It waits; a window
    with no drift lets it go, and so does a drift found harmless (the try then wants a gain)."""
    spec = make_spec(persist=True, triggers={"drift": {"min_labels_after": 300}}, policy={"cooldown": 0})
    drifting: dict[str, Any] = {"share_drifted": 0.5, "drifted_columns": ("age",), "reference_id": "r"}
    building, h = decide(spec, champion_obs(T0, new=2500, **drifting), History())
    assert building.action == "none" and h.drift_streak == 1
    assert any("more data: waits, the inputs drift in this window (age, 1 of 2" in x for x in building.held)
    assert h.more_data_version is None  # no try was made, so none is owed a wait for more rows
    calm, _ = decide(spec, champion_obs(T0 + 3600, new=2500), h)
    assert calm.action == "retrain" and calm.triggers == ["more_data"]
    # the drift lasts: it awaits its labels, then they find it harmless and the try is marked
    lasting, h = decide(spec, champion_obs(T0 + 3600, new=2500, **drifting), h)
    assert lasting.action == "none" and h.pending_onset is not None
    judged = champion_obs(T0 + 7200, new=3000, labels_after_onset=500, metric_after_onset=0.9, **drifting)
    tried, _ = decide(spec, judged, h)
    assert tried.action == "retrain" and tried.triggers == ["more_data", "inputs_shifted"]
    # with no hysteresis asked for (one window suffices), a drifting window is no reason to wait
    once = make_spec(policy={"cooldown": 0})
    quiet_drift = champion_obs(T0, new=2500, share_drifted=0.5, drifted_columns=("age",), reference_id="r")
    assert not any("waits" in x for x in decide(once, quiet_drift, History())[0].held)


def test_a_try_on_more_data_never_holds_back_a_retrain_for_a_decay() -> None:
    spec = make_spec(policy={"cooldown": "6h"})
    tried, h = decide(spec, champion_obs(T0, new=2500), History())
    assert tried.triggers == ["more_data"]
    decayed = Observation(at=T0 + 3600, metric=0.6, baseline=0.9, baseline_rows=1000, n_labels=1000)
    decision, h = decide(spec, decayed, h)
    assert decision.action == "retrain" and decision.triggers == ["performance"]
    # the decay's retrain starts a cooldown as ever, and it holds the next guess
    guess, _ = decide(spec, champion_obs(T0 + 7200, new=9000, version=3, rows=1000), h)
    assert guess.action == "none" and guess.held[0].startswith("cooldown")


def test_a_try_on_more_data_leaves_the_days_last_retrain_for_a_decay() -> None:
    spec = make_spec(policy={"cooldown": 0, "max_retrains_per_day": 3})
    h = History(retrain_times=[T0 - 3600, T0 - 1800])  # two retrains today
    guess, h = decide(spec, champion_obs(T0, new=2500), h)
    assert guess.action == "none" and "leaves the last one for a decay" in guess.held[0]
    decayed = Observation(at=T0 + 60, metric=0.6, baseline=0.9, baseline_rows=1000, n_labels=1000)
    assert decide(spec, decayed, h)[0].action == "retrain"


def test_no_try_on_more_data_for_a_champion_no_challenger_could_be_shown_better() -> None:
    """Right on all but 3 of the ~1,000 newest rows the try would be judged on: even a
    perfect challenger would win on too few rows for the gate to call it better."""
    spec = make_spec()
    assert decide(spec, champion_obs(T0, new=2500, metric=0.997), History())[0].action == "none"
    assert decide(spec, champion_obs(T0, new=2500, metric=0.99), History())[0].action == "retrain"


def test_a_try_on_more_data_while_the_inputs_drift_harmlessly_wants_a_gain_worth_the_shift() -> None:
    """A shift the labels found harmless goes on; the window doubles with its rows. The try is
    made, marked, and its gate is told to want a gain of at least the loss a decay needs."""
    spec = make_spec(triggers={"drift": {"min_labels_after": 300}}, policy={"cooldown": 0})
    drifting: dict[str, Any] = {"share_drifted": 0.5, "drifted_columns": ("x1",), "reference_id": "r"}
    _, h = decide(spec, champion_obs(T0, new=500, **drifting), History())
    judged = champion_obs(T0 + 3600, new=1000, labels_after_onset=500, metric_after_onset=0.9, **drifting)
    decision, h = decide(spec, judged, h)
    assert decision.action == "none" and h.episode_outcome == "harmless"
    tried, _ = decide(spec, champion_obs(T0 + 7200, new=2500, **drifting), h)
    assert tried.action == "retrain" and tried.triggers == ["more_data", "inputs_shifted"]
    assert "must gain at least that much" in tried.reasons[-1] and "0.01" in tried.reasons[-1]
    # without the shift the same try is a plain one
    plain, _ = decide(spec, champion_obs(T0 + 7200, new=2500), History())
    assert plain.triggers == ["more_data"]
