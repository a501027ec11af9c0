"""Backtests on tables as users bring them: gaps in features, a time column, label times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.controller.backtest_spec import order_by_time
from evertrain.exceptions import DataValidationError
from evertrain.faces.cli import main

ROWS, BATCH = 2400, 300
GAP_SHARE = 0.05


def with_gaps(seed: int = 0) -> pd.DataFrame:
    """A numeric and a categorical feature with ~5% missing values each, warm batches included,
    an event time column (shuffled rows) and the time each label arrived (one day later)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=ROWS)
    plan = rng.choice(["basic", "pro", "team"], size=ROWS)
    noise = rng.normal(size=ROWS)
    y = (x + (plan == "pro") - 0.5 > 0).astype(int)
    frame = pd.DataFrame({"x": x, "plan": plan, "noise": noise, "y": y})
    frame.loc[rng.random(ROWS) < GAP_SHARE, "x"] = np.nan
    frame.loc[rng.random(ROWS) < GAP_SHARE, "plan"] = None
    day = 86_400.0
    frame["ts"] = 1_700_000_000.0 + np.arange(ROWS) * (day / 100)  # 100 rows a day: 3 days a batch
    frame["label_time"] = frame["ts"] + 4 * 3 * day  # labels 4 batches late
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def run(tmp_path: Path, frame: pd.DataFrame, *args: str) -> dict[str, Any]:
    data = tmp_path / "gaps.parquet"
    frame.to_parquet(data, index=False)
    out = tmp_path / "gaps.json"
    code = main(
        ["backtest", str(data), "--target", "y", "--batch-size", str(BATCH), "--json", str(out), *args]
    )
    assert code == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_a_table_with_gaps_replays_with_its_own_times_and_never_learns_from_them(tmp_path: Path) -> None:
    result = run(tmp_path, with_gaps(), "--time-column", "ts")
    s = result["settings"]
    # The time columns order the rows and set the label delay; neither is a feature.
    assert s["features"] == ["x", "plan", "noise"]
    assert (s["time_column"], s["label_time_column"]) == ("ts", "label_time")
    assert s["label_delay_batches"] == 4
    # Every batch was answered, gaps and all, by a model that learned the rule.
    accuracies = [b["accuracy"] for b in result["batches"]]
    assert len(accuracies) == ROWS // BATCH - 5 and None not in accuracies
    assert min(accuracies) > 0.8
    assert result["baselines"]["never"]["mean_accuracy"] > 0.8


def test_linear_models_get_their_gaps_filled(tmp_path: Path) -> None:
    (tmp_path / "evertrain.yaml").write_text(
        "model: {name: gaps, target: y, features: [x, plan, noise], trainer: {kind: sklearn}}\n"
        "data: {source: {kind: parquet, path: gaps.parquet}, time_column: ts,\n"
        "       label_time_column: label_time}\n"
    )
    result = run(tmp_path, with_gaps(1), "--project", str(tmp_path))
    assert result["settings"]["label_delay_batches"] == 4
    assert min(b["accuracy"] for b in result["batches"]) > 0.75


def test_rows_are_cut_in_time_order_and_bad_time_columns_are_named() -> None:
    frame = pd.DataFrame({"t": [3.0, 1.0, 2.0, 0.0], "x": [30, 10, 20, 0], "y": [1, 0, 1, 0]})
    ordered, delay = order_by_time(frame, time_column="t", label_time_column=None, batch_size=2, what="f")
    assert ordered["x"].tolist() == [0, 10, 20, 30] and "t" not in ordered and delay is None
    with pytest.raises(DataValidationError, match="time column 'when' is not in the table"):
        order_by_time(frame, time_column="when", label_time_column=None, batch_size=2, what="f")
