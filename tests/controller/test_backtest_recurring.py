"""A concept that comes back finds the model that served it before.

One rule, then its opposite, then the first rule again, replayed through the real loop
with the default triggers, gate and rollout (batches of 200 rows, a window of 2,000, no
cooldown). When the first rule returns, the rows since the change are too few to learn it
again as well as the champion of the first period had: that earlier champion, offered
beside the candidate training sets and scored on the same newest labelled rows, is
reinstated as the new version, gated against the stale champion and promoted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.console import Console

from evertrain.controller.backtest import backtest
from evertrain.controller.backtest_spec import default_spec
from evertrain.faces.cli_backtest import events_table
from evertrain.spec import Spec

BATCH_ROWS = 200


def test_a_concept_that_comes_back_reinstates_the_model_that_served_it() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36 * BATCH_ROWS, 4))
    rule = np.sin(2.5 * x[:, 0]) * np.sin(2.5 * x[:, 1]) > 0
    period = np.arange(len(x)) // (12 * BATCH_ROWS)  # 12 batches each: rule, opposite, rule
    y = np.where(period == 1, ~rule, rule)
    frame = pd.DataFrame({**{f"x{i}": x[:, i] for i in range(4)}, "y": y.astype(int)})
    defaults = default_spec(frame, "y").model_dump()
    spec = Spec.model_validate(
        {
            **defaults,
            "training": {**defaults["training"], "window": {"rows": 2000}},
            "policy": {"cooldown": 0},
        }
    )
    result = backtest(frame, spec=spec, batch_size=BATCH_ROWS, baselines_every=())
    first, opposite, back = result["retrains"]
    # the first period's champion: v2, trained on more data before any change
    assert (
        first["triggers"] == ["more_data"]
        and {"batch": first["batch"] + 1, "version": 2} in result["promotions"]
    )
    # the opposite rule: neither earlier model can serve it, a fresh one is trained and promoted
    assert opposite["triggers"] == ["performance"] and opposite["training_set"] == "since_change"
    assert opposite["gates"] == "passed"
    # the first rule again: v2 does better on the newest labelled rows than anything the rows
    # since the change teach, and is reinstated as a new version (fitted where v2 was)
    assert back["triggers"] == ["performance"] and back["batch"] > 24
    assert back["training_set"] == "version 2" and back["train_rows"] == first["train_rows"]
    assert back["gates"] == "passed" and back["version"] == 4
    assert {"batch": back["batch"] + 1, "version": 4} in result["promotions"]
    after = [b["accuracy"] for b in result["batches"] if b["index"] > back["batch"] + 1]
    assert min(after) > 0.9
    # and the command's event table says so
    console = Console(record=True, width=200)
    console.print(events_table(result))
    assert "retrain -> v4 (version 2 reinstated) gates passed" in console.export_text()
