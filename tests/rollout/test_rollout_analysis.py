"""The checks of the rollout analysis on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evertrain.rollout.analysis import compare
from evertrain.rollout.evidence import Evidence
from evertrain.spec import AnalysisSpec

ANALYSIS = AnalysisSpec(
    alpha=0.05, max_error_rate_increase=0.01, max_latency_increase=0.25, quality_margin=0.02, min_labels=50
)


def arm(
    name: str,
    version: int,
    n: int,
    *,
    errors: int = 0,
    latency: float = 1.0,
    accuracy: float = 0.9,
    seed: int = 0,
    labels: int | None = None,
) -> Evidence:
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, 2, n).astype(np.float64)
    k = n if labels is None else labels
    correct = rng.random(k) < accuracy
    truth = np.where(correct, preds[:k], 1 - preds[:k])
    return Evidence(
        name,
        version,
        n,
        errors,
        rng.gamma(9.0, latency / 9.0, n),
        preds.astype(object),
        rng.random(n),
        preds[:k].astype(object),
        truth.astype(object),
    )


def judge(champion: Evidence, challenger: Evidence, **kw: object) -> tuple[str, dict[str, str]]:
    args = {"min_samples": 200, "elapsed": 600.0, "duration": 600.0, "final": False, "task": "binary", **kw}
    verdict = compare(champion, challenger, ANALYSIS, **args)  # type: ignore[arg-type]
    return verdict.action, {c.name: c.status for c in verdict.checks}


def test_an_equivalent_challenger_advances_and_promotes_at_the_last_step() -> None:
    champion, canary = arm("champion", 1, 2000, seed=1), arm("canary", 2, 400, seed=2)
    assert judge(champion, canary)[0] == "advance"
    action, checks = judge(champion, canary, final=True)
    assert action == "promote"
    # 400 labels cannot show a 2-point margin either way: quality is inconclusive, which
    # does not hold a step unless the plan requires labels
    assert checks == {"error_rate": "pass", "latency": "pass", "quality": "wait", "predictions": "info"}
    strict = ANALYSIS.model_copy(update={"require_labels": True})
    verdict = compare(
        champion, canary, strict, min_samples=200, elapsed=600.0, duration=600.0, final=True, task="binary"
    )
    assert verdict.action == "hold" and any("enough labels to tell" in r for r in verdict.reasons)
    big_champion, big_canary = arm("champion", 1, 8000, seed=3), arm("canary", 2, 8000, seed=4)
    verdict = compare(
        big_champion,
        big_canary,
        strict,
        min_samples=200,
        elapsed=600.0,
        duration=600.0,
        final=True,
        task="binary",
    )
    assert verdict.action == "promote"
    assert {c.name: c.status for c in verdict.checks}["quality"] == "pass"


def test_too_few_samples_or_too_little_time_holds() -> None:
    champion = arm("champion", 1, 2000)
    assert judge(champion, arm("canary", 2, 100))[0] == "hold"
    assert judge(champion, arm("canary", 2, 400), elapsed=10.0)[0] == "hold"


def test_errors_roll_back_at_once_even_below_the_minimum_sample() -> None:
    action, checks = judge(arm("champion", 1, 2000, errors=1), arm("canary", 2, 30, errors=15))
    assert action == "rollback" and checks["error_rate"] == "fail"


def test_a_slower_challenger_rolls_back_and_a_little_slower_one_does_not() -> None:
    champion = arm("champion", 1, 2000, latency=1.0, seed=3)
    assert judge(champion, arm("canary", 2, 400, latency=2.0, seed=4)) == (
        "rollback",
        {"error_rate": "pass", "latency": "fail", "quality": "wait", "predictions": "info"},
    )
    assert judge(champion, arm("canary", 2, 400, latency=1.1, seed=4))[0] == "advance"


def test_worse_labelled_quality_rolls_back() -> None:
    action, checks = judge(arm("champion", 1, 2000, accuracy=0.95), arm("canary", 2, 400, accuracy=0.6))
    assert action == "rollback" and checks["quality"] == "fail"


def test_quality_waits_for_labels_and_can_be_required() -> None:
    champion, canary = arm("champion", 1, 2000, labels=10), arm("canary", 2, 400, labels=10)
    action, checks = judge(champion, canary)
    assert action == "advance" and checks["quality"] == "wait"
    strict = ANALYSIS.model_copy(update={"require_labels": True})
    verdict = compare(champion, canary, strict, min_samples=200, elapsed=600, duration=600, final=False)
    assert verdict.action == "hold" and "labels" in verdict.reasons[0]


@pytest.mark.parametrize("seed", range(5))
def test_latency_p_value_is_scipys_mann_whitney(seed: int) -> None:
    champion, canary = arm("champion", 1, 500, seed=seed), arm("canary", 2, 300, latency=1.2, seed=seed + 10)
    verdict = compare(champion, canary, ANALYSIS, min_samples=1, elapsed=1, duration=0, final=False)
    latency = next(c for c in verdict.checks if c.name == "latency")
    expected = stats.mannwhitneyu(canary.latency_ms, champion.latency_ms, alternative="greater").pvalue
    assert latency.p_value == pytest.approx(expected)


def test_a_sequential_canary_stops_early_on_a_clear_win_and_on_a_clear_loss() -> None:
    """Under a confirmed decay the first canary step decides as soon as the labels do."""
    stale = arm("champion", 1, 900, accuracy=0.6, seed=5)
    early = {"min_samples": 200, "elapsed": 60.0, "duration": 600.0, "final": False, "sequential": True}
    # 100 labelled rows on a first step that has run a tenth of its time: a clear win promotes
    action, checks = judge(stale, arm("canary", 2, 100, accuracy=0.95, seed=6), **early)
    assert action == "promote" and checks["quality"] == "pass"
    # ... a clear loss rolls back
    good = arm("champion", 1, 900, accuracy=0.95, seed=7)
    action, checks = judge(good, arm("canary", 2, 100, accuracy=0.6, seed=8), **early)
    assert action == "rollback" and checks["quality"] == "fail"
    # without sequential mode the same win waits for the step's time and sample
    action, _ = judge(stale, arm("canary", 2, 100, accuracy=0.95, seed=6), **{**early, "sequential": False})
    assert action == "hold"


def test_a_close_sequential_canary_holds_its_last_step_until_it_decides() -> None:
    champion, canary = arm("champion", 1, 2000, seed=1), arm("canary", 2, 400, seed=2)
    verdict = compare(
        champion,
        canary,
        ANALYSIS,
        min_samples=200,
        elapsed=600.0,
        duration=600.0,
        final=True,
        task="binary",
        sequential=True,
    )
    assert verdict.action == "hold"
    assert any("always-valid" in r and "not yet decided" in r for r in verdict.reasons)


def test_a_canary_the_gate_showed_better_after_a_decay_is_promoted_before_its_labels_come() -> None:
    """Labels days late: the gate's interval above zero on the newest labelled rows stands for
    them, so the first look that finds no failed check promotes; the canary's own labels,
    when they come first and show it worse, still roll it back."""
    proven = "the gate found accuracy 0.950 vs the champion's 0.600 on 400 holdout rows"
    early = {"min_samples": 200, "elapsed": 60.0, "duration": 600.0, "final": False, "sequential": True}
    stale = arm("champion", 1, 450, accuracy=0.6, seed=5, labels=0)
    no_labels = arm("canary", 2, 50, accuracy=0.95, seed=6, labels=0)
    verdict = compare(stale, no_labels, ANALYSIS, task="binary", proven=proven, **early)  # type: ignore[arg-type]
    assert verdict.action == "promote"
    assert "without waiting for its labels" in verdict.reasons[0] and proven in verdict.reasons[0]
    # without the gate's evidence the same canary waits for labels and for its step
    assert judge(stale, no_labels, **early)[0] == "hold"
    # sequential mode off (the spec says never): the gate's evidence changes nothing
    assert judge(stale, no_labels, **{**early, "sequential": False}, proven=proven)[0] == "hold"
    # errors fail it at once, whatever the gate found
    broken = arm("canary", 2, 50, errors=10, seed=6, labels=0)
    assert judge(stale, broken, **early, proven=proven)[0] == "rollback"
    # and labels that show it clearly worse roll it back
    good = arm("champion", 1, 900, accuracy=0.95, seed=7)
    worse = arm("canary", 2, 100, accuracy=0.6, seed=8)
    assert judge(good, worse, **early, proven=proven)[0] == "rollback"


def test_a_promoted_regression_model_is_watched_by_its_errors_on_the_same_rows() -> None:
    """A number is never predicted exactly: after a promotion a regression model is compared
    with its predecessor by absolute errors on the rows it answered, not by exact matches."""
    from evertrain.rollout.analysis import paired_errors

    rng = np.random.default_rng(3)
    spec = AnalysisSpec(min_labels=50, quality_margin=0.05)
    old = np.abs(rng.normal(0.0, 1.0, 400))
    worse = paired_errors(old * 1.5 + 0.1, old, spec)
    assert worse.status == "fail" and "mean absolute error" in worse.detail and "same 400" in worse.detail
    as_good = paired_errors(np.abs(old + rng.normal(0.0, 0.01, 400)), old, spec)
    assert as_good.status == "pass", as_good.detail
    assert paired_errors(old[:20], old[:20], spec).status == "wait"
    # rows with a missing label or prediction are left out, not counted as errors
    with_gaps = np.concatenate([old, [np.nan] * 30])
    assert "same 400" in paired_errors(with_gaps, with_gaps, spec).detail
