"""More data with no decay: the loop tries a challenger on a larger window and the gate decides.

Two stationary streams replayed through the real loop with the default triggers, gate and
rollout, small enough to run in seconds: batches of 200 rows, a first model trained on
1,000, a window of 2,000 rows and no cooldown, so that only the more-data rule spaces the
tries. In one the rule is a
checkerboard that a tree learns better from 2,000 rows than from 1,000: the challenger on
the larger window is shown better and promoted. In the other a noisy half-plane is learned
as well as it can be from 1,000 rows: the challenger is not shown better, nothing is
promoted, and with a full window the champion is not tried again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from evertrain.controller.backtest import backtest
from evertrain.controller.backtest_spec import default_spec
from evertrain.spec import Spec

BATCH_ROWS = 200
FEATURES = 4


def replay(frame: pd.DataFrame) -> dict[str, Any]:
    defaults = default_spec(frame, "y").model_dump()
    spec = Spec.model_validate(
        {
            **defaults,
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


def test_a_model_that_learned_all_it_can_is_tried_once_and_kept() -> None:
    rng, x = inputs(15, seed=1)
    noisy = (x[:, 0] + x[:, 1] > 0) ^ (rng.random(len(x)) < 0.1)
    result = replay(frame_of(x, noisy))
    [retrain] = result["retrains"]  # one try; with no cooldown, five more cycles and no retry
    assert retrain["triggers"] == ["more_data"] and retrain["gates"] == "failed"
    assert result["promotions"] == []
    assert {b["model_version"] for b in result["batches"]} == {1}
