"""Each gate on synthetic scores: pass, fail, and the evidence it reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evertrain.evaluate.evaluation import min_gain, promising, proven_better
from evertrain.evaluate.gates import NO_CHAMPION, GateInputs, MinGain, evaluate_gates
from evertrain.evaluate.metrics import Outputs
from evertrain.spec import (
    ChampionGate,
    FairnessGate,
    LatencyGate,
    SizeGate,
    SliceGate,
    Spec,
    ThresholdGate,
)

N = 2000


def _scores(rng: np.random.Generator, y: np.ndarray, accuracy: np.ndarray | float) -> Outputs:
    right = rng.uniform(size=len(y)) < accuracy
    return Outputs.classification(y, np.where(right == (y == 1), 0.8, 0.2))


@pytest.fixture
def rows() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"region": rng.choice(["a", "b", "c", "d"], N), "age": rng.uniform(18, 90, N)})
    return rng.integers(0, 2, N), frame


def test_threshold_bounds_and_undefined_metric() -> None:
    out = Outputs.classification([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.3])
    checks = evaluate_gates(
        [ThresholdGate(metric="accuracy", min=0.7), ThresholdGate(metric="log_loss", max=0.1)],
        GateInputs(out),
    )
    assert [c.passed for c in checks] == [True, False]
    assert checks[0].evidence["value"] == 0.75 and "outside <= 0.1" in checks[1].reason
    one_class = Outputs.classification([1, 1], [0.3, 0.9])
    [check] = evaluate_gates([ThresholdGate(metric="roc_auc", min=0.5)], GateInputs(one_class))
    assert not check.passed and "undefined" in check.reason


def test_non_inferiority_and_superiority_report_the_interval(rows: tuple[np.ndarray, pd.DataFrame]) -> None:
    y, frame = rows
    rng = np.random.default_rng(1)
    champion = _scores(rng, y, 0.80)
    better, worse = _scores(rng, y, 0.86), _scores(rng, y, 0.70)
    gates = [
        ChampionGate(kind="non_inferiority", metric="accuracy", margin=0.01),
        ChampionGate(kind="superiority", metric="log_loss", margin=0.0),
    ]
    passed = evaluate_gates(gates, GateInputs(better, champion, 3, frame))
    assert all(c.passed for c in passed)
    low, high = passed[0].evidence["interval"]
    assert low < passed[0].evidence["difference"] < high and low > -0.01
    assert passed[1].evidence["higher_is_better"] is False
    assert passed[1].evidence["improvement_interval"][0] > 0  # log loss fell
    failed = evaluate_gates(gates[:1], GateInputs(worse, champion, 3, frame))[0]
    assert not failed.passed and failed.evidence["interval"][1] < -0.01
    assert "95% CI" in failed.reason and "whole improvement interval" in failed.reason


def test_champion_relative_gates_pass_without_a_champion(rows: tuple[np.ndarray, pd.DataFrame]) -> None:
    y, frame = rows
    out = _scores(np.random.default_rng(2), y, 0.6)
    gates = [
        ChampionGate(metric="accuracy"),
        SliceGate(column="region"),
        ThresholdGate(metric="accuracy", min=0.9),
    ]
    checks = evaluate_gates(gates, GateInputs(out, frame=frame))
    assert [c.passed for c in checks] == [True, True, False]
    assert checks[0].reason == NO_CHAMPION
    assert evaluate_gates([], GateInputs(out)) == []


def test_slice_gate_finds_the_one_regressed_slice(rows: tuple[np.ndarray, pd.DataFrame]) -> None:
    y, frame = rows
    rng = np.random.default_rng(3)
    champion = _scores(rng, y, 0.80)
    in_c = (frame["region"] == "c").to_numpy()
    challenger = _scores(rng, y, np.where(in_c, 0.60, 0.84))
    gate = SliceGate(column="region", metric="accuracy", margin=0.02, min_rows=30)
    [check] = evaluate_gates([gate], GateInputs(challenger, champion, 1, frame))
    assert not check.passed
    regressed = [s["slice"] for s in check.evidence["slices"] if s.get("regressed")]
    assert regressed == ["c"] and "'c'" in check.reason
    adjusted = {s["slice"]: s["p_adjusted"] for s in check.evidence["slices"]}
    raw = {s["slice"]: s["p_value"] for s in check.evidence["slices"]}
    assert all(adjusted[k] >= raw[k] for k in raw)  # corrected for the four slices tested
    fine = evaluate_gates([gate], GateInputs(_scores(rng, y, 0.84), champion, 1, frame))[0]
    assert fine.passed


def test_small_slices_are_reported_not_tested_and_numeric_columns_are_binned(
    rows: tuple[np.ndarray, pd.DataFrame],
) -> None:
    y, frame = rows
    rng = np.random.default_rng(4)
    champion, challenger = _scores(rng, y, 0.8), _scores(rng, y, 0.8)
    [check] = evaluate_gates(
        [SliceGate(column="region", min_rows=N)], GateInputs(challenger, champion, 1, frame)
    )
    assert check.passed and check.evidence["n_slices_tested"] == 0
    [binned] = evaluate_gates([SliceGate(column="age")], GateInputs(challenger, champion, 1, frame))
    assert binned.evidence["n_slices_tested"] == 4
    [missing] = evaluate_gates([SliceGate(column="nope")], GateInputs(challenger, champion, 1, frame))
    assert not missing.passed and "'nope'" in missing.reason


def test_fairness_caps_parity_and_opportunity_gaps() -> None:
    rng = np.random.default_rng(5)
    group = np.repeat(["f", "m"], 500)
    y = rng.integers(0, 2, 1000)
    fair = Outputs.classification(y, np.where(y == 1, 0.8, 0.2))
    unfair_p = np.where(group == "m", 0.9, np.where(y == 1, 0.8, 0.2))
    unfair = Outputs.classification(y, unfair_p)
    frame = pd.DataFrame({"sex": group})
    gate = FairnessGate(sensitive="sex", max_demographic_parity_diff=0.1, max_equal_opportunity_diff=0.1)
    ok = evaluate_gates([gate], GateInputs(fair, frame=frame))[0]
    assert ok.passed and ok.evidence["demographic_parity_diff"] < 0.1
    bad = evaluate_gates([gate], GateInputs(unfair, fair, 1, frame))[0]
    assert not bad.passed and "demographic parity difference" in bad.reason
    assert bad.evidence["groups"]["m"]["positive_rate"] == 1.0
    assert bad.evidence["champion"]["demographic_parity_diff"] < 0.1
    regression = evaluate_gates([gate], GateInputs(Outputs.regression([1.0], [1.0]), frame=frame[:1]))[0]
    assert not regression.passed and "binary" in regression.reason


def test_latency_and_size_budgets() -> None:
    out = Outputs.classification([0, 1], [0.2, 0.8])
    gates = [LatencyGate(max_ms_per_row=1.0), SizeGate(max_mb=1.0)]
    ok = evaluate_gates(gates, GateInputs(out, latency_ms_per_row=0.5, size_bytes=500_000))
    assert all(c.passed for c in ok)
    over = evaluate_gates(gates, GateInputs(out, latency_ms_per_row=2.0, size_bytes=2_000_000))
    assert [c.passed for c in over] == [False, False] and over[1].evidence["size_mb"] == 2.0
    unmeasured = evaluate_gates(gates, GateInputs(out))
    assert [c.passed for c in unmeasured] == [False, False]
    # A latency still being measured is asked for after the other gates, in the gates' order.
    asked: list[str] = []

    def later() -> float:
        asked.append("latency")
        return 0.5

    sized = SizeGate(max_mb=1.0)
    checks = evaluate_gates(
        [gates[0], sized], GateInputs(out, latency_later=later, size_bytes=500_000), seed=3
    )
    assert [c.kind for c in checks] == ["latency", "size"] and all(c.passed for c in checks)
    assert asked == ["latency"] and checks[0].evidence["ms_per_row"] == 0.5


def test_auto_gate_promotes_a_non_inferior_challenger_only_under_confirmed_decay(
    rows: tuple[np.ndarray, pd.DataFrame],
) -> None:
    """After a confirmed decay a fresh model as good as the champion wins; otherwise it must beat it."""
    y, frame = rows
    rng = np.random.default_rng(5)
    right = rng.uniform(size=N) < 0.85
    champion = Outputs.classification(y, np.where(right == (y == 1), 0.8, 0.2))
    # the challenger differs from the champion on 80 rows, half of them to its advantage
    flip = np.zeros(N, dtype=bool)
    flip[rng.choice(np.flatnonzero(right), 40, replace=False)] = True
    flip[rng.choice(np.flatnonzero(~right), 40, replace=False)] = True
    challenger = Outputs.classification(y, np.where((right ^ flip) == (y == 1), 0.8, 0.2))
    gate = [ChampionGate(kind="auto", metric="accuracy", margin=0.01)]
    stale = "trained for realized performance below its baseline"
    [fresh] = evaluate_gates(gate, GateInputs(challenger, champion, 1, frame, confirmed_decay=stale))
    [plain] = evaluate_gates(gate, GateInputs(challenger, champion, 1, frame))
    assert fresh.passed and fresh.evidence["test"] == "non_inferiority" and fresh.evidence["bound"] == -0.01
    assert "freshness" in fresh.evidence["rule"] and "auto rule" in fresh.reason
    assert not plain.passed and plain.evidence["test"] == "superiority" and plain.evidence["bound"] == 0.0
    # both state the smallest difference their holdout can see, at 80% power
    for check in (fresh, plain):
        mde = check.evidence["minimum_detectable_difference"]
        assert 0 < mde < 0.05 and check.evidence["power"] == 0.8
        assert "smallest difference this holdout detects" in check.reason


def test_auto_gate_shows_a_challenger_better_by_its_probabilities_when_its_labels_tie(
    rows: tuple[np.ndarray, pd.DataFrame],
) -> None:
    """Two models that give the same labels, one of them surer where it is right and less sure
    where it is wrong: accuracy cannot tell them apart, log-loss on the same rows can. An auto
    gate (no decay) passes it; an explicit superiority gate on accuracy does not; a challenger
    better on probabilities but estimated worse on accuracy does not pass either."""
    y, frame = rows
    rng = np.random.default_rng(11)
    right = rng.uniform(size=N) < 0.8
    champion = Outputs.classification(y, np.where(right == (y == 1), 0.7, 0.3))
    says_one = right == (y == 1)  # both predict class 1 on the same rows
    challenger = Outputs.classification(
        y, np.where(says_one, np.where(right, 0.9, 0.55), np.where(right, 0.1, 0.45))
    )
    assert (challenger.pred == champion.pred).all()
    auto = ChampionGate(kind="auto", metric="accuracy")
    [check] = evaluate_gates([auto], GateInputs(challenger, champion, 1, frame))
    assert check.passed and check.evidence["difference"] == 0.0
    seen = check.evidence["by_probabilities"]
    assert seen["metric"] == "log_loss" and seen["passed"] and seen["improvement_interval"][0] > 0
    # each of the two tests at half the error rate: 97.5% for a 95% gate
    assert check.evidence["test_confidence"] == pytest.approx(0.975) and "97.5% CI" in check.reason
    assert "on its probabilities, log_loss difference" in check.reason
    # evidence enough for a canary to promote at its first look, as an accuracy interval above zero is
    proof = proven_better({"passed": True, "checks": [check.to_dict()]})
    assert proof is not None and "log_loss improvement 97.5% CI [+" in proof
    [explicit] = evaluate_gates(
        [ChampionGate(kind="superiority", metric="accuracy")], GateInputs(challenger, champion, 1, frame)
    )
    assert not explicit.passed and explicit.evidence["by_probabilities"] is None
    # the same sharper probabilities, but 30 more rows wrong: no worse on accuracy is required
    slip = np.flatnonzero(right)[:30]
    p1 = np.where(says_one, np.where(right, 0.9, 0.55), np.where(right, 0.1, 0.45))
    p1[slip] = np.where(says_one[slip], 0.49, 0.51)  # now wrong, but barely
    slipped = Outputs.classification(y, p1)
    [no] = evaluate_gates([auto], GateInputs(slipped, champion, 1, frame))
    assert no.evidence["difference"] < 0 and not no.passed
    assert "worse on accuracy" in no.evidence["by_probabilities"]["reason"]
    # under a confirmed decay the freshness test stands alone, on accuracy
    [fresh] = evaluate_gates([auto], GateInputs(challenger, champion, 1, frame, confirmed_decay="decayed"))
    assert fresh.evidence["by_probabilities"] is None and fresh.evidence["test_confidence"] == 0.95


def test_a_try_made_under_a_harmless_shift_must_gain_what_a_decay_would_lose(
    rows: tuple[np.ndarray, pd.DataFrame],
) -> None:
    """A champion right on 99.4% of the newest rows, a challenger on all of them: shown better,
    but by 0.6 of a point. A plain try on more data passes; one made while the inputs drift and
    their labels showed no loss wants the point a decay needs, fails, and is not kept for a
    second look. A challenger two points better passes either way."""
    y, frame = rows
    spec = Spec.model_validate(
        {"model": {"name": "m", "target": "y"}, "data": {"source": {"kind": "csv", "path": "d.csv"}}}
    )
    wanted = min_gain(spec, "more_data,inputs_shifted")
    assert wanted == MinGain("accuracy", 0.01, wanted.why) and min_gain(spec, "more_data") is None

    def outputs(wrong: int) -> Outputs:
        p = np.where(y == 1, 0.95, 0.05)
        p[:wrong] = 1 - p[:wrong]
        return Outputs.classification(y, p)

    champion, close, far = outputs(12), outputs(0), outputs(52)
    auto = ChampionGate(kind="auto", metric="accuracy")
    [plain] = evaluate_gates([auto], GateInputs(close, champion, 1, frame))
    assert plain.passed and plain.evidence["min_gain"] is None
    [short] = evaluate_gates([auto], GateInputs(close, champion, 1, frame, min_gain=wanted))
    assert not short.passed and short.evidence["min_gain"]["value"] == 0.01
    assert "estimated gain +0.006 is below +0.01, the least wanted" in short.reason
    assert not promising({"passed": False, "checks": [short.to_dict()]})
    [enough] = evaluate_gates([auto], GateInputs(close, far, 1, frame, min_gain=wanted))
    assert enough.passed and enough.evidence["difference"] == pytest.approx(0.026)
    # a gate on another metric is not held to a gain in accuracy's units
    [other] = evaluate_gates(
        [ChampionGate(kind="auto", metric="log_loss")], GateInputs(close, champion, 1, frame, min_gain=wanted)
    )
    assert other.evidence["min_gain"] is None


def test_after_a_decay_a_challenger_with_the_champions_every_answer_is_not_fresher(
    rows: tuple[np.ndarray, pd.DataFrame],
) -> None:
    """A retrain for a decay that learned only the old rows answers as the champion does on
    every holdout row: not worse, but nothing was learned from the change, and a canary for it
    would hold the next retrain up. One answer of its own is enough to be judged as before."""
    y, frame = rows
    p = np.where(y == 1, 0.8, 0.2)
    p[:300] = 1 - p[:300]
    champion = Outputs.classification(y, p)
    clone = Outputs.classification(y, np.clip(p + 0.05, 0, 1))  # other scores, the same labels
    auto = ChampionGate(kind="auto", metric="accuracy")
    decayed = {"confirmed_decay": "trained for realized performance below its baseline"}
    [same] = evaluate_gates([auto], GateInputs(clone, champion, 1, frame, **decayed))
    assert not same.passed and same.evidence["agreement"] == 1.0
    assert "gives the champion's answer on all 2000 rows: it learned nothing" in same.reason
    assert not promising({"passed": False, "checks": [same.to_dict()]})
    p[0] = 1 - p[0]  # one row answered otherwise (rightly or not: accuracy moves by 0.0005)
    [own] = evaluate_gates([auto], GateInputs(Outputs.classification(y, p), champion, 1, frame, **decayed))
    assert own.passed and own.evidence["agreement"] == pytest.approx(0.9995)
    # an explicit non-inferiority gate judges what it was asked to
    [explicit] = evaluate_gates(
        [ChampionGate(kind="non_inferiority", metric="accuracy")], GateInputs(clone, champion, 1, frame)
    )
    assert explicit.passed
