"""When is retraining worth it? Triggers, cooldowns, a daily budget and hysteresis.

``decide`` is a pure function of what monitoring saw and what the loop did before, so
that a backtest, the live controller and the tests all decide the same way. It returns
a :class:`Decision` whose ``reasons`` say why it acted, and ``held`` why it did not.

The rules, in order:

1. A trigger fires: drift on at least ``triggers.drift.share_drifted`` of the columns
   for ``consecutive`` windows in a row, once ``min_labels_after`` labelled rows from
   after the drift began have arrived (retraining before that would learn the old
   data again: labels come late) and, with ``triggers.drift.confirm``, the champion's
   realized metric on those rows is below its baseline by ``triggers.performance.drop``
   (a shift of the inputs that does not hurt the predictions is recorded, not retrained
   for); realized performance below the baseline by
   ``triggers.performance.drop`` with at least ``min_labels`` labels; estimated
   performance below its baseline by ``triggers.estimated_performance.drop``; the
   schedule is due; enough new labelled rows; or a manual request.
   A decay must persist: the drift for ``triggers.drift.consecutive`` windows (two by
   default; the retrain then learns from the first of them on), the realized decay in
   each of ``triggers.performance.consecutive`` consecutive parts of the labelled rows.
   A one-window spell does not cost a retrain. A decay still deepening (accuracy clearly
   lower in the newest part than in the one before, see :func:`deepening`) waits until it
   levels off: a change under way leaves the rows since it began mostly of the old
   behaviour, and a retrain on them gives the champion's answers again.
2. A trigger is held back while a challenger is in shadow or canary, by the cooldown
   since the last retrain, by the daily cap on
   retrains, and by the daily compute budget. A manual request ignores the cooldown
   but not the budget.
3. More data: when no trigger fired, no decay showed, no drift awaits its labels and none
   is building (drifting inputs in fewer than ``consecutive`` windows so far), a
   challenger is tried on a larger window once the window a retrain would use holds
   ``1 + triggers.more_data.growth`` times the rows of the window the champion was
   trained on (see :func:`more_data`). Nothing about the champion is known to be wrong,
   so the gate wants the challenger shown better; the next try for the same champion
   waits until the rows it could draw on (its window and the rows labelled since, with no
   bound) grow by that factor again: tries grow apart geometrically, on a bounded window
   as on an unbounded one. It is held back as in 2, but its own retrain does not start a
   cooldown for the triggers of 1, and it never takes the last retrain of the day's cap.
4. Hysteresis: once a retrain was made for a drift episode, that same episode (drift
   persisting on the same columns against the same reference) does not trigger again;
   a column that starts drifting is new evidence, and a new reference (a promotion)
   starts a new episode. An episode found harmless by its labels is closed the same way.

A retrain keeps the configured window. When the data changed is a hint (``since``): the
drift's onset, or for decayed performance (with ``triggers.performance.learn_from:
decay``) the start of the labelled rows where the decay showed. The training judges on
the rows after it and chooses among candidate training sets by them
(:mod:`evertrain.train.candidates`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from typing import Any

from croniter import croniter

from evertrain.spec import Spec, check_cron

DAY = 86400.0


@dataclass(frozen=True)
class Observation:
    """What one monitoring window showed."""

    at: float
    n_rows: int = 0
    share_drifted: float | None = None
    drifted_columns: tuple[str, ...] = ()
    metric: float | None = None  # realized, from labels that have arrived
    metric_parts: tuple[float | None, ...] = ()  # the same rows cut in consecutive parts, oldest first
    n_labels: int = 0
    baseline: float | None = None  # the champion's metric when it was promoted
    baseline_rows: int | None = None  # holdout rows that baseline was measured on (its uncertainty)
    estimated: float | None = None  # label-free estimate
    estimated_baseline: float | None = None
    new_labelled_rows: int = 0
    reference_id: str | None = None  # what drift was measured against
    labels_after_onset: int = 0  # labelled rows served since a pending drift began
    metric_after_onset: float | None = None  # the champion's realized metric on those rows
    realized_since: float | None = None  # event time of the oldest row behind ``metric``
    window_start: float | None = None  # when the monitored window began (a drift began no later)
    rollout_version: int | None = None  # a challenger in shadow or canary right now
    champion_version: int | None = None
    champion_rows: int | None = None  # the window the champion's training drew on
    labels_since_champion: int = 0  # labelled rows that arrived after the champion's training cut-off
    first_served: float | None = None  # the champion's metric on its first labelled rows in service
    first_served_rows: int = 0  # how many rows that was (triggers.performance.min_labels)


@dataclass
class History:
    """What the loop did before, as the policy needs it."""

    retrain_times: list[float] = field(default_factory=list)
    train_seconds_by_day: dict[str, float] = field(default_factory=dict)
    drift_streak: int = 0
    episode_reference: str | None = None  # reference of the drift episode already retrained for
    episode_columns: list[str] = field(default_factory=list)  # columns that episode covered
    episode_outcome: str | None = None  # "retrained", or "harmless" when its labels showed no loss
    last_scheduled: float | None = None  # when the schedule last fired (or a cron one started)
    pending_onset: float | None = None  # when a drift began that awaits post-drift labels
    pending_columns: list[str] = field(default_factory=list)
    pending_reference: str | None = None
    drift_began: float | None = None  # start of the first window of the current drift streak
    more_data_version: int | None = None  # the champion a challenger on more data was last tried against
    more_data_rows: int | None = None  # the rows that try could draw on, with no bound on the window
    more_data_times: list[float] = field(default_factory=list)  # retrains that were more-data tries
    # the champion's metric on its first labelled rows in service, once known: {"version", "value", "rows"}
    first_served: dict[str, Any] | None = None
    # a challenger the gate rejected but found promising, judged again on rows labelled after its
    # cut-off: {"version", "champion", "cutoff", "holdout_rows", "looks"} (see steps.gate)
    second_look: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "retrain_times": self.retrain_times,
            "train_seconds_by_day": self.train_seconds_by_day,
            "drift_streak": self.drift_streak,
            "episode_reference": self.episode_reference,
            "episode_columns": self.episode_columns,
            "episode_outcome": self.episode_outcome,
            "last_scheduled": self.last_scheduled,
            "pending_onset": self.pending_onset,
            "pending_columns": self.pending_columns,
            "pending_reference": self.pending_reference,
            "drift_began": self.drift_began,
            "more_data_version": self.more_data_version,
            "more_data_rows": self.more_data_rows,
            "more_data_times": self.more_data_times,
            "first_served": self.first_served,
            "second_look": self.second_look,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> History:
        data = data or {}
        return cls(
            retrain_times=list(data.get("retrain_times", [])),
            train_seconds_by_day=dict(data.get("train_seconds_by_day", {})),
            drift_streak=int(data.get("drift_streak", 0)),
            episode_reference=data.get("episode_reference"),
            episode_columns=list(data.get("episode_columns", [])),
            episode_outcome=data.get("episode_outcome"),
            last_scheduled=data.get("last_scheduled"),
            pending_onset=data.get("pending_onset"),
            pending_columns=list(data.get("pending_columns", [])),
            pending_reference=data.get("pending_reference"),
            drift_began=data.get("drift_began"),
            more_data_version=data.get("more_data_version"),
            more_data_rows=data.get("more_data_rows"),
            more_data_times=list(data.get("more_data_times", [])),
            first_served=data.get("first_served"),
            second_look=data.get("second_look"),
        )


@dataclass(frozen=True)
class Decision:
    action: str  # "retrain" or "none"
    reasons: list[str]
    held: list[str]
    triggers: list[str]
    since: float | None = None  # the retrain learns from rows after this time (drift onset, decay)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reasons": self.reasons,
            "held": self.held,
            "triggers": self.triggers,
            "since": self.since,
        }


def _columns(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names[:5]) + ("..." if len(names) > 5 else "")


def day_key(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def cron_due(cron: str, last: float | None, now: float) -> bool:
    """Whether a time of the UTC cron schedule ``cron`` fell in (last, now].

    ``croniter`` reads the expression with cron's own rules (names, macros such as
    ``@daily``, a day matching either restricted day field). With no ``last``, only a
    time in the minute before ``now`` counts. A bad expression raises ``ValueError``
    (the spec refuses it when the project file is read).

    >>> cron_due("0 3 * * MON", last=1767571200.0, now=1767582000.0)  # Monday 00:00 -> 03:00
    True
    """
    check_cron(cron)
    since = now - 60 if last is None else last
    # the latest schedule time at or before now: cron times fall on whole minutes, and
    # croniter's get_prev looks strictly before its start, so start just after now's minute
    after = dt.datetime.fromtimestamp((math.floor(now) // 60 + 1) * 60, dt.UTC)
    latest = croniter(cron.strip(), after, day_or=True).get_prev(float)
    return bool(latest > since)


def performance_metric(spec: Spec) -> tuple[str, bool]:
    """The realized metric the performance trigger watches, and whether higher is better.

    ``triggers.performance.metric``, else the task's primary metric (accuracy, or rmse for
    regression, where lower is better).
    """
    from evertrain.evaluate.metrics import get_metric

    metric = get_metric(spec.watched_metric())
    return metric.name, metric.higher_is_better


def _worse(value: float, baseline: float, drop: float, higher_is_better: bool) -> bool:
    """Whether ``value`` is worse than ``baseline`` by more than ``drop``."""
    return value < baseline - drop if higher_is_better else value > baseline + drop


#: Metrics that are a share of rows (a mean of 0/1 per row), whose uncertainty the decay test knows.
PROPORTION_METRICS = ("accuracy",)


def decay_z(value: float, n: int, baseline: float, baseline_rows: int | None, drop: float) -> float:
    """The one-sided z statistic of "``value`` (a share on ``n`` rows) is below ``baseline`` -
    ``drop``", with the variance of both shares; ``baseline_rows`` None: the baseline is exact.

    Shares are smoothed (one success and one failure added) so that a perfect score still
    carries doubt.

    >>> round(decay_z(0.80, 1000, 0.86, 833, 0.01), 2), round(decay_z(0.995, 1000, 1.0, 833, 0.01), 2)
    (2.86, -1.84)
    """

    def variance(p: float, rows: int) -> float:
        q = (p * rows + 1) / (rows + 2)
        return q * (1 - q) / (rows + 2)

    se = math.sqrt(variance(value, n) + (variance(baseline, baseline_rows) if baseline_rows else 0.0))
    return (baseline - drop - value) / se


def decayed(spec: Spec, value: float, n: int, baseline: float, baseline_rows: int | None) -> bool:
    """Whether the realized ``value`` on ``n`` labelled rows shows a decay against ``baseline``.

    For accuracy with ``triggers.performance.confidence``: the loss beyond ``drop`` is
    significant by :func:`decay_z`; otherwise ``value`` is worse than baseline - drop.
    """
    perf = spec.triggers.performance
    metric, higher_is_better = performance_metric(spec)
    if not _worse(value, baseline, perf.drop, higher_is_better):
        return False
    if perf.confidence is None or metric not in PROPORTION_METRICS or n <= 0:
        return True
    from scipy.stats import norm

    return decay_z(value, n, baseline, baseline_rows, perf.drop) > float(norm.ppf(perf.confidence))


def reference(spec: Spec, obs: Observation) -> Observation:
    """``obs`` with the baseline its decay tests compare against: for accuracy measured on
    fewer holdout rows than ``triggers.performance.min_labels``, the holdout share pooled
    with the champion's first that many labelled rows in service.

    The decay test wants ``min_labels`` realized rows before it judges; a baseline measured
    on fewer is held to a lower standard than the rows compared with it. A few dozen holdout
    rows that chance (or the choice of training set made on them) put high are a reference
    the model never reaches again, and every window then reads as a decay, and a retrain
    that cannot beat the champion is made at every cooldown. Pooled (correct rows over
    rows) with the same model's first rows in service, the reference is as sure as the rows
    it is compared with. Only two measurements of one quantity are pooled: when a two-sided
    test at the trigger's ``confidence`` (95% without one) tells the first rows served from
    the holdout, the model lost accuracy from its first day (a drift that goes on after a
    promotion), and the holdout stays the reference. A holdout of ``min_labels`` rows or
    more is kept as it is: it spans
    the newest part of the training window, where the first rows served span only the
    weeks after a promotion (on a seasonal table, one season: they would move a sound
    reference by the season they fell in). Other metrics, an unknown holdout size or no
    first rows yet: ``obs`` unchanged.

    >>> from evertrain.spec import Spec
    >>> spec = Spec.model_validate({"model": {"name": "m", "target": "y"},
    ...     "data": {"source": {"kind": "csv", "path": "x.csv"}}})
    >>> obs = reference(spec, Observation(at=0.0, baseline=0.634, baseline_rows=41,
    ...     first_served=0.49, first_served_rows=200))
    >>> round(obs.baseline, 3), obs.baseline_rows
    (0.514, 241)
    >>> reference(spec, replace(obs, baseline=0.81, baseline_rows=1000)).baseline  # a sound holdout
    0.81
    >>> reference(spec, replace(obs, baseline=0.87, baseline_rows=133, first_served=0.60)).baseline
    0.87
    """
    metric, _ = performance_metric(spec)
    if (
        metric not in PROPORTION_METRICS
        or obs.baseline is None
        or not obs.baseline_rows
        or obs.baseline_rows >= spec.triggers.performance.min_labels
        or obs.first_served is None
        or obs.first_served_rows <= 0
    ):
        return obs
    from scipy.stats import norm

    p, q = obs.baseline, obs.first_served
    se = math.sqrt(p * (1 - p) / obs.baseline_rows + q * (1 - q) / obs.first_served_rows)
    agree = float(norm.ppf(1 - (1 - (spec.triggers.performance.confidence or 0.95)) / 2))
    if se > 0 and abs(p - q) / se > agree:
        return obs  # the model decayed from its first rows: not one quantity measured twice
    rows = obs.baseline_rows + obs.first_served_rows
    pooled = (obs.baseline * obs.baseline_rows + obs.first_served * obs.first_served_rows) / rows
    return replace(obs, baseline=pooled, baseline_rows=rows)


def _clearly(spec: Spec) -> str:
    perf = spec.triggers.performance
    metric, _ = performance_metric(spec)
    if perf.confidence is None or metric not in PROPORTION_METRICS:
        return f"by more than {perf.drop:.3f}"
    return f"by more than {perf.drop:.3f} (one-sided test at {perf.confidence:.0%})"


def _persists(obs: Observation, consecutive: int, drop: float, higher_is_better: bool) -> bool:
    """Whether the decay shows in each of ``consecutive`` parts of the labelled rows, oldest to newest.

    With one part (or when monitoring gave no parts) the average alone decides.
    """
    if consecutive <= 1 or not obs.metric_parts or obs.baseline is None:
        return True
    if len(obs.metric_parts) < consecutive:
        return False
    baseline = obs.baseline
    return all(
        v is not None and _worse(v, baseline, drop, higher_is_better) for v in obs.metric_parts[-consecutive:]
    )


def deepening(spec: Spec, obs: Observation) -> str | None:
    """How the decay still deepens, if the newest part of the labelled rows is clearly worse than
    the part before it (by more than ``triggers.performance.drop``, and significant by a
    two-proportion test at the trigger's confidence); else None. Accuracy only.

    A change under way (a gradual drift) shows as a metric that falls from part to part; a
    retrain then learns mostly from rows of the old behaviour and gives the champion's answers
    again. Once the newest parts agree (an abrupt change, or a gradual one that has settled) the
    decay is retrained for. The test is the decay test's (:func:`decay_z`, with no margin),
    the part before standing for the baseline.

    >>> from evertrain.spec import Spec
    >>> spec = Spec.model_validate({"model": {"name": "m", "target": "y"},
    ...     "data": {"source": {"kind": "csv", "path": "x.csv"}}})
    >>> deepening(spec, Observation(at=0.0, n_labels=1000, metric_parts=(0.94, 0.86)))
    '0.940 then 0.860 on 500 rows each'
    >>> deepening(spec, Observation(at=0.0, n_labels=1000, metric_parts=(0.52, 0.50))) is None
    True
    """
    metric, higher_is_better = performance_metric(spec)
    parts = obs.metric_parts
    if metric not in PROPORTION_METRICS or len(parts) < 2 or obs.n_labels <= 0:
        return None
    older, newer = parts[-2], parts[-1]
    drop = spec.triggers.performance.drop
    if older is None or newer is None or not _worse(newer, older, drop, higher_is_better):
        return None
    from scipy.stats import norm

    rows = obs.n_labels // len(parts)
    confidence = spec.triggers.performance.confidence or 0.95
    if decay_z(newer, rows, older, rows, 0.0) <= float(norm.ppf(confidence)):
        return None
    return f"{older:.3f} then {newer:.3f} on {rows} rows each"


def window_cap(spec: Spec) -> int | None:
    """The most rows the configured training window holds (None: no row bound)."""
    window = spec.training.window
    return None if window.kind == "expanding" else window.rows


#: The trigger that goes with ``more_data`` when the try is made while the inputs drift and their
#: labels showed no loss (a harmless shift): the gate then wants a gain of at least the loss a
#: decay needs (``triggers.performance.drop``), see :func:`evertrain.evaluate.evaluation.min_gain`.
SHIFTED = "inputs_shifted"


#: Fewest holdout rows the champion must get wrong for a try on more data to be worth a
#: retrain: a challenger right on five rows the champion gets wrong, and wrong on none it
#: gets right, is the least a paired test at 95% can call better (a one-sided sign test:
#: 0.5 ** 5 = 3%). A champion that errs less on the newest rows leaves nothing to show.
MIN_ERRORS_TO_BEAT = 5


@dataclass(frozen=True)
class MoreData:
    """A try of the more-data path: the window rows it can learn from, and why."""

    rows: int  # the window the challenger learns from
    seen: int  # the rows it could draw on with no bound on the window: the next try's yardstick
    reason: str


def more_data(spec: Spec, obs: Observation, history: History) -> MoreData | None:
    """Whether the window a retrain would use now is large enough to try a challenger on more data.

    The champion's training drew on a window of ``obs.champion_rows``; with the rows
    labelled after its training cut-off (at least ``min_new_rows`` of them) the window
    could now hold that many more, up to the configured row bound. It must reach ``1 +
    triggers.more_data.growth`` times the champion's window. After a try for this champion
    that did not replace it, the rows there are to draw on (the champion's window and the
    rows labelled since, counted with no bound) must reach that many times what they were
    at the try: the tries grow apart geometrically, and on a bounded window, full since the
    first try, each later one learns from rows the last one never saw and is judged on
    rows neither saw. One gate comparison cannot confirm a gain of a point (the census
    table: a window twice the first model's gains about a point, and 8 of 19 such tries
    failed their gate on its 1,000 holdout rows), so a rejected try is not the last word;
    the spacing keeps a saturated stream to a few tries. No try is made while a challenger
    the gate kept for this champion awaits a look on newer rows (a newer challenger would
    drop it, see :func:`evertrain.controller.steps.gate`). A champion whose realized accuracy
    leaves fewer than :data:`MIN_ERRORS_TO_BEAT` errors on the holdout the try would be
    judged on is not tried.

    >>> from evertrain.spec import Spec
    >>> spec = Spec.model_validate({"model": {"name": "m", "target": "y"},
    ...     "data": {"source": {"kind": "csv", "path": "x.csv"}}})
    >>> obs = Observation(at=0.0, champion_version=1, champion_rows=2500, labels_since_champion=3000)
    >>> more_data(spec, obs, History()).rows  # the 5,000-row window, twice the champion's
    5000
    >>> tried = History(more_data_version=1, more_data_rows=5000)  # that try kept the champion
    >>> more_data(spec, obs, tried) is None  # the same rows: nothing new to learn from
    True
    >>> more_data(spec, replace(obs, labels_since_champion=7500), tried).rows  # twice the rows seen
    5000
    >>> more_data(spec, replace(obs, metric=0.999), History()) is None  # 1 error in 1,000: no room
    True
    """
    cfg = spec.triggers.more_data
    rows, new, version = obs.champion_rows, obs.labels_since_champion, obs.champion_version
    if not cfg.enabled or rows is None or rows <= 0 or version is None or new < cfg.min_new_rows:
        return None
    cap = window_cap(spec)
    seen = rows + new
    could = seen if cap is None else min(cap, seen)
    tried = history.more_data_rows if history.more_data_version == version else None
    if tried is None and could < math.ceil((1 + cfg.growth) * rows):
        return None
    if tried is not None and seen < math.ceil((1 + cfg.growth) * tried):
        return None
    kept = history.second_look
    if kept is not None and kept.get("champion") == version:
        return None  # a challenger for this champion awaits a look on newer rows: a new one would drop it
    metric, _ = performance_metric(spec)
    if metric in PROPORTION_METRICS and obs.metric is not None:
        from evertrain.data.windows import newest_count

        holdout = spec.training.holdout
        judged = newest_count(could, holdout.fraction, holdout.min_rows)
        if (1 - obs.metric) * judged < MIN_ERRORS_TO_BEAT:
            return None  # right on nearly every row: no challenger could be shown better
    again = ""
    if tried is not None:
        again = f"a try with {tried} rows to draw on did not replace it; they grew {seen / tried:.1f}x; "
    return MoreData(
        could,
        seen,
        f"more data: {new} labelled rows arrived since v{version} was trained on a window of {rows}; "
        f"{again}a window of {could} rows ({could / rows:.1f}x) may learn more, with no decay to act on: "
        "the gate must show the challenger better",
    )


def decide(
    spec: Spec, obs: Observation, history: History, *, manual: str | None = None
) -> tuple[Decision, History]:
    """Decide whether to retrain now; returns the decision and the updated history."""
    triggers = spec.triggers
    reasons: list[str] = []
    fired: list[str] = []
    held: list[str] = []
    new = History.from_dict(history.to_dict())
    if obs.first_served is not None and obs.champion_version is not None:
        new.first_served = {
            "version": obs.champion_version,
            "value": obs.first_served,
            "rows": obs.first_served_rows,
        }
    raw_rows = obs.baseline_rows
    obs = reference(spec, obs)

    # drift, with a streak for hysteresis across windows, and a wait for post-drift labels
    drift_now = (
        triggers.drift.enabled
        and obs.share_drifted is not None
        and obs.share_drifted >= triggers.drift.share_drifted
        and obs.share_drifted > 0
    )
    new.drift_streak = history.drift_streak + 1 if drift_now else 0
    if not drift_now:
        new.drift_began = None
    elif history.drift_streak == 0 or history.drift_began is None:
        new.drift_began = obs.window_start if obs.window_start is not None else obs.at
    if obs.reference_id is not None and obs.reference_id != history.episode_reference:
        new.episode_reference, new.episode_columns = None, []  # a new reference starts a new episode
        new.episode_outcome = None
    if obs.reference_id is not None and obs.reference_id != history.pending_reference:
        new.pending_onset, new.pending_columns, new.pending_reference = None, [], None
    harmless_shift = False  # the inputs drift now, and their labels showed no loss
    if drift_now and new.drift_streak >= triggers.drift.consecutive:
        cols = _columns(obs.drifted_columns)
        same_episode = (
            obs.reference_id is not None
            and obs.reference_id == new.episode_reference
            and set(obs.drifted_columns) <= set(new.episode_columns)
        )
        if same_episode and new.episode_outcome == "harmless":
            harmless_shift = True
            held.append(f"drift on {cols} persists, but its labels showed no loss of performance")
        elif same_episode:
            held.append(f"drift on {cols} persists, but this episode was already retrained for")
        elif new.pending_onset is None:
            # the drift began with the first window of the streak that just completed, not with
            # the window that completed it; new columns in a long-running streak begin now
            just_completed = new.drift_streak == triggers.drift.consecutive and new.drift_began is not None
            new.pending_onset = (
                new.drift_began
                if just_completed and new.drift_began is not None
                else (obs.window_start if obs.window_start is not None else obs.at)
            )
            new.pending_reference = obs.reference_id
            new.pending_columns = sorted(obs.drifted_columns)
        else:
            new.pending_columns = sorted(set(new.pending_columns) | set(obs.drifted_columns))
    perf = triggers.performance
    metric, higher_is_better = performance_metric(spec)
    worse_word = "below" if higher_is_better else "above"
    if new.pending_onset is not None:
        need = triggers.drift.min_labels_after
        cols = _columns(tuple(new.pending_columns))
        harmless = (
            triggers.drift.confirm
            and obs.metric_after_onset is not None
            and obs.baseline is not None
            and not decayed(
                spec, obs.metric_after_onset, obs.labels_after_onset, obs.baseline, obs.baseline_rows
            )
        )
        if obs.labels_after_onset >= need and harmless:
            held.append(
                f"drift on {cols}: the champion's {metric} on the {obs.labels_after_onset} labelled "
                f"rows since it began is {obs.metric_after_onset:.3f}, not {worse_word} its baseline "
                f"{obs.baseline:.3f} {_clearly(spec)}: the inputs moved, the predictions held; "
                "no retrain"
            )
            new.episode_reference = new.pending_reference
            new.episode_columns = sorted(set(new.episode_columns) | set(new.pending_columns))
            new.episode_outcome = "harmless"
            new.pending_onset, new.pending_columns, new.pending_reference = None, [], None
            harmless_shift = True
        elif obs.labels_after_onset >= need:
            fired.append("drift")
            loss = (
                f", where the champion's {metric} is {obs.metric_after_onset:.3f} "
                f"(baseline {obs.baseline:.3f})"
                if obs.metric_after_onset is not None and obs.baseline is not None
                else ""
            )
            reasons.append(
                f"drift: {cols} drifted ({obs.share_drifted or 0:.0%} of columns now); "
                f"{obs.labels_after_onset} labelled rows since it began{loss}"
            )
        else:
            held.append(
                f"drift on {cols}: waiting for labelled rows from after it began "
                f"({obs.labels_after_onset} of {need})"
            )

    decay_seen = False
    if perf.enabled and obs.metric is not None and obs.baseline is not None:
        if obs.n_labels < perf.min_labels:
            held.append(f"performance: only {obs.n_labels} labels, {perf.min_labels} needed")
        elif (
            is_decay := decayed(spec, obs.metric, obs.n_labels, obs.baseline, obs.baseline_rows)
        ) and not _persists(obs, perf.consecutive, perf.drop, higher_is_better):
            decay_seen = True
            parts = ", ".join("n/a" if v is None else f"{v:.3f}" for v in obs.metric_parts)
            held.append(
                f"performance: {metric} {obs.metric:.3f} is {worse_word} the baseline {obs.baseline:.3f} "
                f"{_clearly(spec)} on average, but not in each of {perf.consecutive} "
                f"consecutive parts of its labelled rows ({parts}): a spell, not yet a decay"
            )
        elif is_decay and (falling := deepening(spec, obs)) is not None:
            decay_seen = True
            held.append(
                f"performance: {metric} {obs.metric:.3f} is {worse_word} the baseline {obs.baseline:.3f} "
                f"{_clearly(spec)}, and still falling ({falling}): the rows since it began hold the "
                "old behaviour still; retrained for once it levels off"
            )
        elif is_decay:
            fired.append("performance")
            pooled = (
                f" (its holdout pooled with its first {obs.first_served_rows} labelled rows in service)"
                if obs.first_served is not None and obs.baseline_rows != raw_rows
                else ""
            )
            reasons.append(
                f"performance: {metric} {obs.metric:.3f} is {worse_word} the baseline {obs.baseline:.3f}"
                f"{pooled} {_clearly(spec)} ({obs.n_labels} labels)"
            )

    est = triggers.estimated_performance
    if (
        est.enabled
        and obs.estimated is not None
        and obs.estimated_baseline is not None
        and obs.estimated < obs.estimated_baseline - est.drop
    ):
        fired.append("estimated_performance")
        reasons.append(
            f"estimated {est.metric} {obs.estimated:.3f} is below its baseline "
            f"{obs.estimated_baseline:.3f} by more than {est.drop:.3f} (no labels needed)"
        )

    sched = triggers.schedule
    if sched.every is not None and (
        history.last_scheduled is None or obs.at - history.last_scheduled >= sched.every
    ):
        fired.append("schedule")
        reasons.append(f"schedule: every {sched.every:.0f}s")
        new.last_scheduled = obs.at
    elif sched.cron is not None and cron_due(sched.cron, history.last_scheduled, obs.at):
        fired.append("schedule")
        reasons.append(f"schedule: cron '{sched.cron}'")
        new.last_scheduled = obs.at
    elif sched.cron is not None and history.last_scheduled is None:
        # the schedule starts when the loop first sees it, as cron's does when it starts:
        # the next time after this one fires; a time before the loop ran is not owed
        new.last_scheduled = obs.at

    vol = triggers.volume
    if vol.new_labelled_rows is not None and obs.new_labelled_rows >= vol.new_labelled_rows:
        fired.append("volume")
        reasons.append(f"volume: {obs.new_labelled_rows} new labelled rows (>= {vol.new_labelled_rows})")

    if manual:
        fired.append("manual")
        reasons.append(f"manual: {manual}")

    # more data: only when nothing else is being dealt with (a decay, a drift awaiting labels or building)
    more = None if fired or decay_seen or new.pending_onset is not None else more_data(spec, obs, history)
    if more is not None and drift_now and new.drift_streak < triggers.drift.consecutive:
        # the inputs drift in this window, the streak not yet long enough to tell a change from a
        # spell: the window would learn from inputs on the move, and its labels have not yet said
        # whether the champion handles them (then the try would want a gain worth the shift)
        held.append(
            f"more data: waits, the inputs drift in this window ({_columns(obs.drifted_columns)}, "
            f"{new.drift_streak} of {triggers.drift.consecutive} windows in a row); the next "
            "windows say whether it lasts and whether it hurts"
        )
        more = None
    if more is not None:
        fired.append("more_data")
        reasons.append(more.reason)
        if harmless_shift:
            # the window grew with rows from moved inputs that the champion, its labels showed,
            # handles within the loss a decay needs: a gain below that is not worth a rollout
            fired.append(SHIFTED)
            reasons.append(
                f"the inputs drift and their labels showed no loss of more than "
                f"{spec.triggers.performance.drop:g}: "
                f"the challenger must gain at least that much"
            )

    if not fired:
        return Decision("none", reasons or ["no trigger fired"], held, []), new

    policy = spec.policy
    if obs.rollout_version is not None and "manual" not in fired:
        held.append(f"rollout of v{obs.rollout_version} in progress: its verdict comes first")
        return Decision("none", reasons, held, fired), new
    # a try on more data is a guess: it spaces out other tries, never a retrain for a decay
    tries = set(history.more_data_times)
    spacing = [t for t in history.retrain_times if more is not None or t not in tries]
    last = max(spacing) if spacing else None
    if last is not None and obs.at - last < policy.cooldown and "manual" not in fired:
        held.append(f"cooldown: last retrain {obs.at - last:.0f}s ago, cooldown is {policy.cooldown:.0f}s")
        return Decision("none", reasons, held, fired), new
    today = [t for t in history.retrain_times if day_key(t) == day_key(obs.at)]
    if len(today) >= policy.max_retrains_per_day and "manual" not in fired:
        held.append(f"budget: {len(today)} retrains today, at most {policy.max_retrains_per_day}")
        return Decision("none", reasons, held, fired), new
    if more is not None and len(today) + 1 >= policy.max_retrains_per_day:
        # a guess never takes the day's last retrain: a decay or a drift may need it
        held.append(
            f"budget: {len(today)} retrains today, at most {policy.max_retrains_per_day}; "
            "a try on more data leaves the last one for a decay or a drift"
        )
        return Decision("none", reasons, held, fired), new
    spent = history.train_seconds_by_day.get(day_key(obs.at), 0.0)
    allowed = spec.training.budget.daily_train_seconds
    if spent >= allowed:
        held.append(f"compute budget: {spent:.0f}s of training today, at most {allowed:.0f}s")
        return Decision("none", reasons, held, fired), new

    new.retrain_times = [*history.retrain_times, obs.at]
    since = new.pending_onset if "drift" in fired else None
    if since is None and "performance" in fired and perf.learn_from == "decay":
        since = obs.realized_since
    if more is not None:
        # the next try for this champion waits until the rows to draw on grow by the same factor again
        new.more_data_version, new.more_data_rows = obs.champion_version, more.seen
        new.more_data_times = [*history.more_data_times, obs.at]
    if new.pending_onset is not None:
        # this retrain learns from the drifted data: the episode is covered
        new.episode_reference = new.pending_reference
        new.episode_columns = sorted(set(new.episode_columns) | set(new.pending_columns))
        new.episode_outcome = "retrained"
        new.pending_onset, new.pending_columns, new.pending_reference = None, [], None
    return Decision("retrain", reasons, held, fired, since), new


def record_training_time(history: History, at: float, seconds: float) -> History:
    new = History.from_dict(history.to_dict())
    key = day_key(at)
    new.train_seconds_by_day[key] = new.train_seconds_by_day.get(key, 0.0) + seconds
    return new
