"""``evertrain run --once --json`` as a scheduler's task: JSON on stdout, the exit code by the contract.

0 nothing to do or done, 1 a gate or rollout said no, 2 usage or data error, 3 infrastructure error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from evertrain.controller.outcome import cycle_outcome
from evertrain.faces.cli import main


@pytest.fixture(scope="module")
def churn_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("example") / "churn"
    assert main(["init", str(folder)]) == 0
    return folder


@pytest.fixture
def project(tmp_path: Path, churn_example: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(churn_example, folder)
    return folder


def task(capsys: pytest.CaptureFixture[str], project: Path) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    code = main(["run", "--once", "--json", "--project", str(project)])
    out, err = capsys.readouterr()
    return code, json.loads(out), err  # stdout is the JSON alone


def edit_spec(project: Path, **sections: Any) -> None:
    path = project / "evertrain.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.update(sections)
    path.write_text(yaml.safe_dump(spec))


def test_a_first_cycle_promotes_and_the_next_has_nothing_to_do(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    code, result, err = task(capsys, project)
    assert code == 0, err
    assert result["outcome"] == "promoted" and result["exit_code"] == 0
    assert result["model"] == "churn" and result["cycle"] == 1 and result["version"] == 1
    assert result["gate"]["status"] == "passed" and result["train"]["status"] == "trained"
    assert "train    version 1 trained" in err  # the step lines go to stderr for the task's log

    code, result, err = task(capsys, project)
    assert code == 0, err
    assert result["outcome"] == "nothing_to_do" and result["cycle"] == 2
    assert result["train"] == {"status": "skipped"}


def test_a_failed_gate_exits_1(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    edit_spec(project, gates=[{"kind": "threshold", "metric": "roc_auc", "min": 0.9999}])
    code, result, _ = task(capsys, project)
    assert code == 1
    assert result["outcome"] == "gate_failed" and result["version"] == 1
    assert "roc_auc" in result["reason"]


def test_a_bad_project_file_exits_2_with_json(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    edit_spec(project, training={"window": {"kind": "sliding", "rows": -5}})
    code, result, err = task(capsys, project)
    assert code == 2
    assert result["outcome"] == "failed" and result["error_code"] == "spec" and result["cycle"] is None
    assert "rows" in result["reason"] and err.startswith("error: ")


def test_missing_data_fails_the_training_step_and_exits_2(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    (project / "data" / "churn.csv").unlink()
    code, result, _ = task(capsys, project)
    assert code == 2, result
    assert result["outcome"] == "failed" and result["train"]["status"] == "failed"
    assert "churn.csv" in result["reason"]


def test_an_unreachable_store_exits_3(
    capsys: pytest.CaptureFixture[str], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVERTRAIN_DB_URL", "postgresql://evertrain@127.0.0.1:9/none?connect_timeout=2")
    code, result, _ = task(capsys, project)
    assert code == 3, result
    assert result["outcome"] == "failed" and result["error_code"] == "store"


def test_json_needs_once(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert main(["run", "--cycles", "2", "--json", "--project", str(project)]) == 2
    assert "--once" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("result", "outcome", "code"),
    [
        ({"cycle": None, "skipped": "another controller holds the lease (b)"}, "skipped", 0),
        (
            {"monitor": {"status": "failed", "error": "s3 down", "error_code": "store"}},
            "failed",
            3,
        ),
        ({"monitor": {"status": "failed", "error": "KeyError: 'x'"}}, "failed", 3),
        (
            {"rollout": {"action": "rollback", "outcome": "rolled_back", "version": 4, "reasons": ["worse"]}},
            "rolled_back",
            1,
        ),
        ({"rollout": {"action": "promote", "outcome": "promoted", "version": 4}}, "promoted", 0),
        ({"rollout": {"action": "hold", "version": 4, "reasons": ["need labels"]}}, "rollout_hold", 0),
        ({"cycle": 3, "stopped": True}, "stopped", 3),
    ],
)
def test_outcomes_of_stored_cycle_results(result: dict[str, Any], outcome: str, code: int) -> None:
    got = cycle_outcome(result)
    assert (got.outcome, got.exit_code) == (outcome, code)


def step_task(capsys: pytest.CaptureFixture[str], project: Path, step: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["run", "--once", "--json", "--step", step, "--project", str(project)])
    return code, json.loads(capsys.readouterr().out)


def test_steps_as_tasks_make_one_cycle(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    answers = {step: step_task(capsys, project, step) for step in ("monitor", "decide", "train", "gate")}
    assert {step: (code, r["outcome"], r["next_step"]) for step, (code, r) in answers.items()} == {
        "monitor": (0, "monitored", "decide"),
        "decide": (0, "retrain_due", "train"),
        "train": (0, "trained", "gate"),
        "gate": (0, "promoted", "rollout"),
    }
    assert {r["cycle"] for _, r in answers.values()} == {1}  # each call resumed the same cycle
    assert answers["train"][1]["version"] == 1 and "train" not in answers["decide"][1]
    code, closed = step_task(capsys, project, "rollout")
    assert code == 0 and closed["outcome"] == "promoted" and closed["cycle"] == 1
    assert "paused_after" not in closed and closed["train"]["version"] == 1  # trained once, read back
    # The next call starts cycle 2; a later step runs the earlier ones it needs on the way.
    code, result = step_task(capsys, project, "gate")
    assert code == 0 and result["cycle"] == 2 and result["outcome"] == "nothing_to_do"
    assert result["decide"]["action"] == "none" and result["gate"] == {"status": "skipped"}


def test_a_gate_that_says_no_exits_1_at_its_step_and_at_the_end(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    edit_spec(project, gates=[{"kind": "threshold", "metric": "roc_auc", "min": 0.9999}])
    code, result = step_task(capsys, project, "gate")
    assert (code, result["outcome"], result["next_step"]) == (1, "gate_failed", "rollout")
    code, result = step_task(capsys, project, "rollout")
    assert (code, result["outcome"], result["cycle"]) == (1, "gate_failed", 1)


def test_step_is_checked(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, result = step_task(capsys, project, "deploy")  # an orchestrator still gets the task's JSON
    assert code == 2 and "unknown step 'deploy'" in json.dumps(result), result
    assert main(["run", "--once", "--step", "monitor", "--project", str(project)]) == 2
    assert "--once --json" in capsys.readouterr().err
