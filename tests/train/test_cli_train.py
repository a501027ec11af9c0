"""The training commands through the CLI entry point, on a project made by ``evertrain init``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from evertrain.faces.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_train_evaluate_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "shop"
    code, out, _ = _run(capsys, "init", str(folder), "--example", "churn")
    assert code == 0 and (folder / "evertrain.yaml").is_file() and (folder / "data" / "churn.csv").is_file()
    assert "evertrain train churn" in out
    code, _, err = _run(capsys, "init", str(folder))
    assert code == 2 and "already exists" in err

    code, out, _ = _run(capsys, "train", "churn", "--project", str(folder), "--reason", "first", "--json")
    trained = json.loads(out)
    assert code == 0 and trained["version"] == 1 and trained["outcome"] == "accepted"
    assert {c["kind"] for c in trained["report"]["checks"]} >= {"threshold", "non_inferiority", "slices"}

    assert _run(capsys, "promote", "churn", "1", "--project", str(folder))[0] == 0
    code, out, _ = _run(capsys, "evaluate", "churn", "1", "--project", str(folder), "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and "champion itself" in report["checks"][1]["reason"]
    code, out, _ = _run(capsys, "evaluate", "churn", "1", "--project", str(folder), "--champion", "none")
    assert code == 0 and "all 5 gates passed" in out

    code, out, _ = _run(capsys, "runs", "churn", "--project", str(folder), "--json")
    listed = json.loads(out)
    assert code == 0 and [r["outcome"] for r in listed["runs"]] == ["accepted"]
    assert listed["runs"][0]["metrics"]["holdout"]["roc_auc"] > 0.8
    code, out, _ = _run(capsys, "runs", "churn", "--project", str(folder))
    assert code == 0 and listed["runs"][0]["id"][:8] in out


def test_failing_gates_exit_1_and_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "strict"
    assert _run(capsys, "init", str(folder))[0] == 0
    spec = (folder / "evertrain.yaml").read_text()
    spec = spec.replace(
        "{kind: threshold, metric: roc_auc, min: 0.6}", "{kind: threshold, metric: roc_auc, min: 0.999}"
    )
    spec = spec.replace("executor: local", "executor: inline")
    (folder / "evertrain.yaml").write_text(spec)
    code, out, err = _run(capsys, "train", "churn", "--project", str(folder))
    assert code == 1 and "FAIL" in out and "failed its gates" in err
    code, _, err = _run(capsys, "evaluate", "churn", "1", "--project", str(folder))
    assert code == 1 and "threshold(roc_auc >= 0.999)" in err
    assert _run(capsys, "train", "other", "--project", str(folder))[0] == 2
    code, _, err = _run(capsys, "evaluate", "churn", "9", "--project", str(folder))
    assert code == 2 and "no version 9" in err
    code, _, err = _run(capsys, "init", str(tmp_path / "x"), "--example", "nope")
    assert code == 2 and "unknown example 'nope'" in err


def test_every_example_project_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evertrain.data.examples import EXAMPLES

    llm = importlib.util.find_spec("peft") is not None
    for name in sorted(EXAMPLES):
        if EXAMPLES[name].base_model is not None and not llm:
            continue  # the llm extra is not installed: its examples cannot run here
        folder = tmp_path / name
        assert _run(capsys, "init", str(folder), "--example", name)[0] == 0
        # Each example names its model after itself.
        code, out, err = _run(
            capsys, "train", name, "--project", str(folder), "--executor", "inline", "--json"
        )
        assert code == 0, err
        assert json.loads(out)["outcome"] == "accepted"
