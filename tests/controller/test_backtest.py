"""Backtests: the real loop replayed over generated streams whose answers are known.

Two streams of 20 batches of 1,000 rows: in one the labelling rule changes at batch 8
(the loop must retrain, say why, and beat a model that never retrains); in the other
only the inputs move and the rule stays (nothing may be promoted). Both run through
the command line, as a user would, with the default spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.controller.backtest import backtest
from evertrain.controller.backtest_spec import task_of_target
from evertrain.faces.cli import main

BATCH_ROWS = 1000
BATCHES = 20
CHANGE_BATCH = 8
LABEL_NOISE = 0.05


def concept_change(seed: int = 0) -> pd.DataFrame:
    """y = [x1 + x2 > 0] until CHANGE_BATCH, then [x1 - x2 > 0]: the old model is right half the time."""
    rng = np.random.default_rng(seed)
    n = BATCHES * BATCH_ROWS
    x = rng.normal(size=(n, 3))
    after = np.arange(n) >= CHANGE_BATCH * BATCH_ROWS
    rule = np.where(after, x[:, 0] - x[:, 1] > 0, x[:, 0] + x[:, 1] > 0)
    y = rule ^ (rng.random(n) < LABEL_NOISE)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y.astype(int)})


def inputs_shift(seed: int = 1) -> pd.DataFrame:
    """x1 and x3 move at CHANGE_BATCH; y keeps following the same logistic rule of x1 and x2."""
    rng = np.random.default_rng(seed)
    n = BATCHES * BATCH_ROWS
    x = rng.normal(size=(n, 3))
    after = np.arange(n) >= CHANGE_BATCH * BATCH_ROWS
    x[after, 0] += 1.0
    x[after, 2] *= 2.0
    p = 1.0 / (1.0 + np.exp(-4.0 * (x[:, 0] + x[:, 1])))
    y = rng.random(n) < p
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y.astype(int)})


def run_cli(tmp_path: Path, frame: pd.DataFrame, name: str) -> dict[str, Any]:
    data = tmp_path / f"{name}.parquet"
    frame.to_parquet(data, index=False)
    out = tmp_path / f"{name}.json"
    code = main(["backtest", str(data), "--target", "y", "--batch-size", str(BATCH_ROWS), "--json", str(out)])
    assert code == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def after_change(batches: list[dict[str, Any]]) -> float:
    return float(np.mean([b["accuracy"] for b in batches if b["index"] >= CHANGE_BATCH]))


def test_a_concept_change_is_retrained_for_and_beats_never_retraining(tmp_path: Path) -> None:
    result = run_cli(tmp_path, concept_change(), "change")
    # the JSON of DESIGN.md
    assert {"batches", "retrains", "promotions", "mean_accuracy", "n_retrains", "train_seconds"} <= set(
        result
    )
    assert all({"index", "accuracy", "model_version"} <= set(b) for b in result["batches"])
    assert [b["index"] for b in result["batches"]] == list(range(result["settings"]["warm_batches"], BATCHES))
    assert result["n_retrains"] == len(result["retrains"]) >= 1
    assert all({"batch", "reason"} <= set(r) for r in result["retrains"])
    assert all({"batch", "version"} <= set(p) for p in result["promotions"])
    assert set(result["baselines"]) == {"never", "every_5", "every_20"}
    for base in result["baselines"].values():
        assert {"mean_accuracy", "n_retrains", "train_seconds"} <= set(base)

    # nothing happens before the change; after it, a retrain with its reason, then a promotion
    first = result["retrains"][0]
    assert first["batch"] >= CHANGE_BATCH
    assert "performance" in first["reason"] or "drift" in first["reason"]
    assert any(p["batch"] >= CHANGE_BATCH for p in result["promotions"])
    assert result["batches"][-1]["model_version"] != result["batches"][0]["model_version"]
    never = result["baselines"]["never"]
    assert never["n_retrains"] == 0
    assert after_change(result["batches"]) > after_change(never["batches"]) + 0.1
    assert result["mean_accuracy"] > never["mean_accuracy"]


def test_inputs_that_shift_under_a_fixed_rule_promote_nothing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, inputs_shift(), "shift")
    assert result["promotions"] == []
    assert {b["model_version"] for b in result["batches"]} == {1}
    # the shift was seen: monitoring flagged drifted columns after the change, never before
    drifted = [b for b in result["batches"] if b["drifted"]]
    assert drifted and min(b["index"] for b in drifted) >= CHANGE_BATCH
    assert "x1" in drifted[0]["drifted"]


def test_the_function_needs_a_target_outside_a_project() -> None:
    from evertrain.exceptions import UsageError

    with pytest.raises(UsageError, match="--target"):
        backtest(concept_change())


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        ([True, False], "binary"),
        (["a", "b", "c"], "multiclass"),
        ([0, 1, 2, 3], "multiclass"),
        ([0.5, 1.25, 3.0], "regression"),
        (list(range(50)), "regression"),
    ],
)
def test_the_task_is_inferred_from_the_target(values: list[Any], task: str) -> None:
    assert task_of_target(pd.Series(values)) == task


def test_bad_input_exits_2_with_a_one_line_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "small.csv"
    concept_change().head(3 * BATCH_ROWS).to_csv(data, index=False)
    cases = [
        (["backtest", str(tmp_path / "absent.csv"), "--target", "y"], "no such file"),
        (["backtest", str(data), "--target", "label"], "target column 'label' is not in the table"),
        (["backtest", str(data), "--target", "y", "--batch-size", str(BATCH_ROWS)], "too few rows: 3000"),
        (["backtest", str(data)], "--target"),
        (["backtest", str(data), "--target", "y", "--batch-size", "0"], "batch size must be at least 1"),
    ]
    for argv, reason in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1, err


def test_inside_a_project_its_spec_is_replayed_and_its_store_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "evertrain.yaml").write_text(
        "model: {name: churn, target: y, features: [x1, x2]}\n"
        "data: {source: {kind: parquet, path: data/*.parquet}, time_column: t}\n"
        "policy: {cooldown: 0}\n"
    )
    data = tmp_path / "history.parquet"
    concept_change().head(12 * BATCH_ROWS).to_parquet(data, index=False)
    out = tmp_path / "out.json"
    argv = ["backtest", str(data), "--project", str(project), "--batch-size", str(BATCH_ROWS)]
    assert main([*argv, "--json", str(out), "--label-delay", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["model"] == "churn" and result["settings"]["features"] == ["x1", "x2"]
    assert result["settings"]["label_delay_batches"] == 1
    assert not (project / ".evertrain").exists()  # the replay ran in a throwaway project
    capsys.readouterr()
    assert main([*argv, "--target", "x3"]) == 2
    assert "predicts 'y', not 'x3'" in capsys.readouterr().err


def test_text_classes_are_coded_and_regression_is_scored_by_r2() -> None:
    rng = np.random.default_rng(3)
    n = 8 * 200
    x = rng.normal(size=(n, 2))
    grade = np.where(x[:, 0] > 0.5, "high", np.where(x[:, 0] < -0.5, "low", "mid"))
    classes = backtest(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": grade}), target="y", batch_size=200)
    assert classes["settings"]["task"] == "multiclass"
    assert classes["settings"]["classes"] == ["high", "low", "mid"]
    assert classes["mean_accuracy"] > 0.9
    amount = 2 * x[:, 0] - x[:, 1] + rng.normal(scale=0.1, size=n)
    numbers = backtest(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": amount}), target="y", batch_size=200)
    assert (numbers["settings"]["task"], numbers["settings"]["metric"]) == ("regression", "r2")
    assert all(0.9 < b["accuracy"] <= 1.0 for b in numbers["batches"])
    # the policy's champion and the never-retrain baseline are the same model on the same rows
    never = numbers["baselines"]["never"]["batches"]
    assert [round(b["accuracy"], 6) for b in numbers["batches"]] == [round(b["accuracy"], 6) for b in never]


def test_labels_of_batches_served_before_a_log_compaction_still_arrive(tmp_path: Path) -> None:
    """The loop compacts its logs every few cycles, merging each batch's prediction part into a
    larger one; the labels of a batch served before that must arrive all the same (they were
    dropped when the replay looked for the batch's own part to know it had been served)."""
    from evertrain.controller.backtest_spec import default_spec
    from evertrain.data.logs import FEEDBACK, read_log

    frame = concept_change().iloc[: 12 * 200]
    spec = default_spec(frame, "y")
    spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"compact_every": 2})})
    delay, warm = 3, 2
    out = backtest(
        frame,
        spec=spec,
        batch_size=200,
        label_delay=delay,
        warm_batches=warm,
        baselines_every=(),
        workdir=tmp_path / "bt",
    )
    assert out["settings"]["n_batches"] == 12
    labels = read_log(
        str(tmp_path / "bt" / ".evertrain" / "logs"), FEEDBACK, "backtest", columns=["request_id"]
    )
    batches = sorted({int(r[1:7]) for r in labels["request_id"].to_pylist()})
    # every served batch whose labels were due by the last cycle: warm .. last - delay
    assert batches == list(range(warm, 12 - delay))
