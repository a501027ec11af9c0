"""The example Prefect flow runs an evertrain cycle with each step a Prefect task, on the real Prefect
(its own venv: Prefect pins fastapi below ours) and a local ephemeral Prefect API, and branches on
the task contract's exit codes: 0 go on, 1 closed without retry, 2 fail at once, 3 retry then fail."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from _tools import ROOT, run_tool, tool_env, tool_venv

from evertrain.faces.cli import main
from evertrain.store import Store

FLOW = ROOT / "examples" / "orchestrators" / "prefect_flow.py"
DRIVER = Path(__file__).with_name("_prefect_driver.py")
EVERTRAIN = [sys.executable, "-m", "evertrain"]
# One Prefect process, a dozen evertrain processes: minutes on 2 busy cores.
pytestmark = pytest.mark.timeout(900)
ALL_STEPS = [
    "evertrain-monitor",
    "evertrain-decide",
    "evertrain-train",
    "evertrain-gate",
    "evertrain-rollout",
]


def edit_spec(project: Path, **sections: Any) -> None:
    path = project / "evertrain.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.update(sections)
    path.write_text(yaml.safe_dump(spec))


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four projects, five flow runs in one Prefect process (one ephemeral API server)."""
    bin_dir = tool_venv("prefect")
    base = tmp_path_factory.mktemp("prefect")
    example = base / "example"
    assert main(["init", str(example)]) == 0
    projects = {name: base / name for name in ("good", "strict", "broken", "down")}
    for folder in projects.values():
        shutil.copytree(example, folder)
    edit_spec(projects["strict"], gates=[{"kind": "threshold", "metric": "roc_auc", "min": 0.9999}])
    edit_spec(projects["broken"], training={"window": {"kind": "sliding", "rows": -5}})
    unreachable = "EVERTRAIN_DB_URL=postgresql://evertrain@127.0.0.1:9/none?connect_timeout=1"
    runs = [
        {"project": str(projects["good"])},  # bootstrap: trains, gates, promotes
        {"project": str(projects["good"])},  # nothing to do: train and gate are not run
        {"project": str(projects["strict"])},  # the gate says no
        {"project": str(projects["broken"])},  # a bad project file
        {"project": str(projects["down"]), "command": ["env", unreachable, *EVERTRAIN]},
    ]
    for run in runs:
        run.setdefault("command", EVERTRAIN)
        run["retry_delay_seconds"] = 0
    env = tool_env(bin_dir)
    env.update(
        PYTHONPATH=str(ROOT / "src"),  # for the evertrain command the flow starts
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    done = run_tool([str(bin_dir / "python"), str(DRIVER), str(FLOW), json.dumps(runs)], env, cwd=base)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(runs), done.stdout[-2000:]
    first, second, strict, broken, down = lines
    return {
        "projects": projects,
        "first": first,
        "second": second,
        "strict": strict,
        "broken": broken,
        "down": down,
    }


def tasks(flow: dict[str, Any]) -> list[str]:
    return [t["name"] for t in flow["tasks"]]


def test_a_first_cycle_runs_every_step_as_a_task_and_promotes(flows: dict[str, Any]) -> None:
    first = flows["first"]
    assert first["state"] == "COMPLETED", first
    assert tasks(first) == ALL_STEPS
    assert all(t["runs"] == 1 and t["state"] == "COMPLETED" for t in first["tasks"])
    assert first["result"]["outcome"] == "promoted" and first["result"]["version"] == 1
    # The five tasks made one finished cycle in evertrain's store, and the version is the champion.
    project = flows["projects"]["good"]
    store = Store.for_project(project).open()
    cycles = store.runs.list(model="churn", kind="cycle")
    # (the second flow ran cycle 2 on this project)
    assert {(r.params["cycle"], r.status) for r in cycles} == {(1, "succeeded"), (2, "succeeded")}
    assert store.registry.get_alias("churn", "champion") == 1
    store.close()


def test_nothing_to_do_skips_train_and_gate(flows: dict[str, Any]) -> None:
    second = flows["second"]
    assert second["state"] == "COMPLETED", second
    assert tasks(second) == ["evertrain-monitor", "evertrain-decide", "evertrain-rollout"]
    result = second["result"]
    assert result["outcome"] == "nothing_to_do" and result["exit_code"] == 0 and result["cycle"] == 2
    assert result["train"] == {"status": "skipped"}  # run by the rollout task's call, as a no-op


def test_a_failed_gate_closes_the_cycle_without_retry(flows: dict[str, Any]) -> None:
    strict = flows["strict"]
    assert strict["state"] == "COMPLETED", strict  # the loop worked; the model did not pass
    assert tasks(strict) == ALL_STEPS and all(t["runs"] == 1 for t in strict["tasks"])
    result = strict["result"]
    assert result["outcome"] == "gate_failed" and result["exit_code"] == 1
    assert "roc_auc" in result["reason"]
    store = Store.for_project(flows["projects"]["strict"]).open()
    assert store.registry.get_alias("churn", "champion") is None
    store.close()


def test_a_usage_error_fails_the_flow_at_once(flows: dict[str, Any]) -> None:
    broken = flows["broken"]
    assert broken["state"] == "FAILED"
    assert broken["tasks"] == [{"name": "evertrain-monitor", "state": "FAILED", "runs": 1}]  # no retry
    assert "exited 2" in broken["result"] and "rows" in broken["result"]


def test_an_infrastructure_error_is_retried_then_fails(flows: dict[str, Any]) -> None:
    down = flows["down"]
    assert down["state"] == "FAILED"
    assert down["tasks"] == [{"name": "evertrain-monitor", "state": "FAILED", "runs": 3}]  # 1 + 2 retries
    assert "exited 3" in down["result"]
