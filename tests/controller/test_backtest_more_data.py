"""More data with no decay: the loop tries a challenger on a larger window and the gate decides.

Two stationary streams replayed through the real loop with the default triggers, gate and
rollout, small enough to run in seconds: batches of 200 rows, a first model trained on
1,000, a window of 2,000 rows and no cooldown, so that only the more-data rule spaces the
tries. In one the rule is a
checkerboard that a tree learns better from 2,000 rows than from 1,000: the challenger on
the larger window is shown better and promoted. In a noisy half-plane the gain from more rows
is too small for one gate (on its labels or its probabilities): the challenger is kept and
judged again on the rows labelled after its cut-off, shown better there and promoted. On
labels that nothing predicts, with the trees kept whatever they score, the challenger kept for
a second look is shown no better there and dropped, and the champion is tried again once the
rows to draw on have doubled, no sooner; by default every model there is the base rate, and
none replaces another.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.controller import steps
from evertrain.controller.backtest import backtest
from evertrain.controller.backtest_spec import default_spec
from evertrain.controller.policy import History
from evertrain.rollout import get_active
from evertrain.spec import Spec

BATCH_ROWS = 200
FEATURES = 4


def replay(frame: pd.DataFrame, *, base_rate_check: bool = True) -> dict[str, Any]:
    defaults = default_spec(frame, "y").model_dump()
    model = defaults["model"]
    spec = Spec.model_validate(
        {
            **defaults,
            "model": {**model, "trainer": {**model["trainer"], "base_rate_check": base_rate_check}},
            "training": {**defaults["training"], "window": {"rows": 2000}},
            "policy": {"cooldown": 0},
        }
    )
    return backtest(frame, spec=spec, batch_size=BATCH_ROWS, baselines_every=())


def inputs(batches: int, seed: int) -> tuple[np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng, rng.normal(size=(batches * BATCH_ROWS, FEATURES))


def frame_of(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({**{f"x{i}": x[:, i] for i in range(FEATURES)}, "y": y.astype(int)})


def test_a_model_that_gains_from_more_rows_is_replaced_by_one_trained_on_more() -> None:
    _, x = inputs(12, seed=0)
    result = replay(frame_of(x, np.sin(2 * x[:, 0]) * np.sin(2 * x[:, 1]) > 0))
    [retrain] = result["retrains"]
    assert retrain["triggers"] == ["more_data"] and retrain["reason"].startswith("more data: ")
    assert "a window of 2000 rows (2.0x)" in retrain["reason"]
    assert retrain["gates"] == "passed"
    # shown better on rows the champion never saw: its canary is promoted at the first look
    # that finds no errors, so that a long canary does not hold the loop
    assert result["promotions"] == [{"batch": retrain["batch"] + 1, "version": retrain["version"]}]
    assert result["batches"][-1]["model_version"] == retrain["version"]


def test_a_gain_the_gate_cannot_confirm_is_confirmed_on_the_rows_labelled_after_it() -> None:
    # a noisy half-plane: 2,000 rows learn it a little better than 1,000, too little for one gate
    rng, x = inputs(15, seed=1)
    noisy = (x[:, 0] + x[:, 1] > 0) ^ (rng.random(len(x)) < 0.1)
    result = replay(frame_of(x, noisy))
    [retrain] = result["retrains"]  # one try; with no cooldown, five more cycles and no retry
    assert retrain["triggers"] == ["more_data"] and retrain["gates"] == "failed"
    assert "is not above +0" in retrain["checks"][0]
    # nor did its probabilities show it better (log-loss, the auto gate's other test)
    assert "on its probabilities, log_loss difference" in retrain["checks"][0]
    # kept, and judged again once as many rows as its holdout were labelled after its cut-off:
    # pooled with the holdout, at the stricter level of a second look, it is shown better
    [look] = result["second_looks"]
    assert look["version"] == retrain["version"] and look["look"] == 1 and look["passed"]
    assert look["rows"] >= retrain["train_rows"] // 2 and "98.75% CI [+" in look["reasons"][0]
    assert result["promotions"] == [{"batch": look["batch"] + 1, "version": retrain["version"]}]


def test_a_challenger_no_better_is_judged_again_and_dropped() -> None:
    # labels that no row predicts: the challenger's small lead on its holdout is chance. The
    # trees are kept whatever they score (by default both models would be the base rate, see
    # the last test): a model no better than its champion by chance is what this is about.
    rng, x = inputs(18, seed=3)
    coin = (x[:, 0] > 0) ^ (rng.random(len(x)) < 0.5)
    result = replay(frame_of(x, coin), base_rate_check=False)
    [retrain] = result["retrains"]
    assert retrain["gates"] == "failed" and "difference +" in retrain["checks"][0]
    [look] = result["second_looks"]
    assert not look["passed"] and look["dropped"] == "look 1 of 2 did not show it better"
    assert result["promotions"] == []
    assert {b["model_version"] for b in result["batches"]} == {1}


def test_a_rejected_try_is_made_again_once_the_rows_double_and_no_sooner() -> None:
    # labels that nothing predicts: no try is ever better, and none may come faster than the
    # rows double (1,000 rows to draw on at the first model, 2,000 at the first try, 4,000 at
    # the second, 8,000 beyond the stream), even though the 2,000-row window is full after
    # the first try and no cooldown spaces them
    rng, x = inputs(30, seed=3)
    result = replay(frame_of(x, (x[:, 0] > 0) ^ (rng.random(len(x)) < 0.5)), base_rate_check=False)
    first, again = result["retrains"]
    assert first["triggers"] == again["triggers"] == ["more_data"]
    assert first["gates"] == again["gates"] == "failed"
    assert "did not replace it" not in first["reason"]
    assert "a try with 2000 rows to draw on did not replace it" in again["reason"]
    assert "a window of 2000 rows (2.0x)" in again["reason"]
    # the second waited for 2,000 more labelled rows, ten batches of 200
    assert again["batch"] - first["batch"] == 10
    assert result["promotions"] == []


class _Killed(Exception):
    """The process dying at a chosen point of the gate step."""


@pytest.mark.parametrize("dies", ["before its rollout starts", "before its result is stored"])
def test_a_second_look_interrupted_by_a_crash_is_not_judged_twice(
    monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    """A controller killed inside the gate step runs that step again on restart, from the
    history stored before it: the look it already judged (and recorded) is read back, not
    judged and recorded a second time, and the rollout it began is not begun again."""
    gate_step = steps.STEP_FUNCTIONS["gate"]
    start_rollout = steps._start_rollout
    crashes: list[dict[str, Any]] = []

    def start_or_die(ctx: Any, version: int, report: dict[str, Any]) -> str:
        if dies == "before its rollout starts" and not crashes:
            raise _Killed
        return start_rollout(ctx, version, report)

    def gate_with_a_crash(ctx: Any) -> Any:
        pending = ctx.history.second_look
        if crashes or pending is None or (ctx.results.get("train") or {}).get("status") == "trained":
            return gate_step(ctx)
        stored = History.from_dict(ctx.history.to_dict())
        count = len(ctx.store.lineage.evaluations(ctx.model, int(pending["version"])))
        try:
            out = gate_step(ctx)
        except _Killed:
            out = None
        judged = len(ctx.store.lineage.evaluations(ctx.model, int(pending["version"])))
        if judged == count:  # not judged yet (too few rows): no crash this time
            assert out is not None
            return out
        started = get_active(ctx.store, ctx.model)
        crash: dict[str, Any] = {"before": count, "judged": judged, "started": started and started.id}
        crashes.append(crash)
        ctx.history = stored  # the restarted controller reads the history stored before the step
        again = gate_step(ctx)
        crash["after"] = len(ctx.store.lineage.evaluations(ctx.model, int(pending["version"])))
        active = get_active(ctx.store, ctx.model)
        crash.update({"active": active and active.id, "out": again})
        return again

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "gate", gate_with_a_crash)
    monkeypatch.setattr(steps, "_start_rollout", start_or_die)
    rng, x = inputs(15, seed=1)
    result = replay(frame_of(x, (x[:, 0] + x[:, 1] > 0) ^ (rng.random(len(x)) < 0.1)))
    [crash] = crashes
    assert crash["judged"] == crash["before"] + 1  # the look was recorded before the crash
    assert crash["after"] == crash["judged"]  # and was not judged again after it
    if dies == "before its result is stored":
        assert crash["active"] == crash["started"]  # the rollout begun before the crash goes on
    else:
        assert crash["started"] is None
    assert crash["out"]["status"] == "passed" and crash["out"]["rollout"] is not None
    # the same outcome as without the crash: one look, passed, one promotion
    [look] = result["second_looks"]
    assert look["passed"]
    assert result["promotions"] == [{"batch": look["batch"] + 1, "version": look["version"]}]


def test_on_labels_nothing_predicts_every_model_is_the_base_rate_and_none_replaces_another() -> None:
    """By default the trees fitted to coin flips give way to the base rate: the first model and
    every try answer the most frequent class, so no try is shown better and none is promoted."""
    rng, x = inputs(30, seed=3)
    y = (rng.random(len(x)) < 0.6).astype(int)  # 60% ones, whatever the inputs
    result = replay(frame_of(x, y))
    assert result["retrains"] and all(r["gates"] == "failed" for r in result["retrains"])
    assert result["promotions"] == []
    # the first model answers 1 for every row: its accuracy is the share of ones in each batch
    shares = [
        float(y[b["index"] * BATCH_ROWS : (b["index"] + 1) * BATCH_ROWS].mean()) for b in result["batches"]
    ]
    assert [round(b["accuracy"], 6) for b in result["batches"]] == [round(v, 6) for v in shares]
