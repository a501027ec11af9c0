"""The example Airflow DAG runs an evertrain cycle with each step a task, under the real Airflow (its
own venv: Airflow pins fastapi below ours), by ``DAG.test`` (what ``airflow dags test`` runs; all
five runs in one Airflow process, see ``_airflow_driver.py``) on a SQLite metadata database:
the branch after ``decide`` skips training when none is due, exit 1 (a gate said no) lets the run go
on to the rollout, exit 2 fails a task at once although it has retries, and exit 3 (the store is
unreachable) is retried, then fails the run."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from _tools import ROOT, run_tool, tool_env, tool_venv

from evertrain.faces.cli import main

DAG = ROOT / "examples" / "orchestrators" / "airflow_dag.py"
DRIVER = Path(__file__).with_name("_airflow_driver.py")
EVERTRAIN = [sys.executable, "-m", "evertrain"]
# Five DAG runs, each task an evertrain process: a minute or more on 2 busy cores.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five DAG runs: a first cycle, one with nothing to do, one whose gate says no, one on a bad
    project file, one whose store is unreachable."""
    bin_dir = tool_venv("airflow")
    base = tmp_path_factory.mktemp("airflow")
    home = base / "airflow-home"
    (home / "dags").mkdir(parents=True)
    shutil.copy(DAG, home / "dags" / DAG.name)
    env = tool_env(bin_dir)
    env.update(
        PYTHONPATH=str(ROOT / "src"),  # for the evertrain command the tasks start
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY="0",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )

    def airflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_tool([str(bin_dir / "airflow"), *args], env, cwd=base)

    migrated = airflow_cli("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    good, strict, broken = base / "good", base / "strict", base / "broken"
    assert main(["init", str(good)]) == 0
    for folder, change in (
        (strict, {"gates": [{"kind": "threshold", "metric": "roc_auc", "min": 0.9999}]}),
        (broken, {"training": {"window": {"kind": "sliding", "rows": -5}}}),
    ):
        shutil.copytree(good, folder)
        spec = yaml.safe_load((folder / "evertrain.yaml").read_text())
        (folder / "evertrain.yaml").write_text(yaml.safe_dump({**spec, **change}))
    unreachable = "EVERTRAIN_DB_URL=postgresql://evertrain@127.0.0.1:9/none?connect_timeout=1"
    runs = {
        "first": {"project": str(good), "command": EVERTRAIN},
        "second": {"project": str(good), "command": EVERTRAIN},
        "strict": {"project": str(strict), "command": EVERTRAIN},
        "broken": {"project": str(broken), "command": EVERTRAIN},
        "down": {"project": str(good), "command": ["env", unreachable, *EVERTRAIN]},
    }
    done = run_tool(
        [str(bin_dir / "python"), str(DRIVER), str(home / "dags"), json.dumps(list(runs.values()))],
        env,
        cwd=base,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    states = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("run ")]
    assert len(states) == len(runs), done.stdout[-3000:] + done.stderr[-3000:]
    # What Airflow recorded, read from its metadata database: the runs in order, their tasks.
    with sqlite3.connect(home / "airflow.db") as db:
        run_ids = [r for (r,) in db.execute("SELECT run_id FROM dag_run ORDER BY id")]
        assert len(run_ids) == len(runs)
        found: dict[str, Any] = {}
        for name, run_id in zip(runs, run_ids, strict=True):
            state = db.execute("SELECT state FROM dag_run WHERE run_id = ?", (run_id,)).fetchone()[0]
            tasks = {
                task: (task_state, tries)
                for task, task_state, tries in db.execute(
                    "SELECT task_id, state, try_number FROM task_instance WHERE run_id = ?", (run_id,)
                )
            }
            pushed = db.execute(
                "SELECT value FROM xcom WHERE run_id = ? AND task_id = 'rollout' AND key = 'return_value'",
                (run_id,),
            ).fetchone()
            found[name] = {
                "state": state,
                "tasks": tasks,
                "printed": states[len(found)],
                "result": json.loads(pushed[0]) if pushed else None,
            }
    return found


def test_a_first_cycle_runs_every_step_as_a_task(airflow: dict[str, Any]) -> None:
    first = airflow["first"]
    assert first["state"] == first["printed"] == "success"
    assert first["tasks"] == {
        step: ("success", 1) for step in ("monitor", "decide", "train", "gate", "rollout")
    }
    result = first["result"]
    assert result["outcome"] == "promoted" and result["version"] == 1 and result["cycle"] == 1


def test_the_branch_skips_training_when_none_is_due(airflow: dict[str, Any]) -> None:
    second = airflow["second"]
    assert second["state"] == second["printed"] == "success"
    assert second["tasks"]["train"][0] == "skipped" and second["tasks"]["gate"][0] == "skipped"
    assert second["tasks"]["rollout"] == ("success", 1)
    assert second["result"]["outcome"] == "nothing_to_do" and second["result"]["cycle"] == 2


def test_a_usage_error_fails_its_task_without_retry(airflow: dict[str, Any]) -> None:
    broken = airflow["broken"]
    assert broken["state"] == broken["printed"] == "failed"
    assert broken["tasks"]["monitor"] == ("failed", 1)  # retries=2, yet one try: exit 2 is not retried
    assert {broken["tasks"][t][0] for t in ("decide", "train", "gate", "rollout")} == {"upstream_failed"}


def test_a_gate_that_says_no_lets_the_run_go_on_to_the_rollout(airflow: dict[str, Any]) -> None:
    strict = airflow["strict"]
    assert strict["state"] == strict["printed"] == "success"  # the loop worked; the model did not pass
    assert strict["tasks"] == {
        step: ("success", 1) for step in ("monitor", "decide", "train", "gate", "rollout")
    }  # exit 1 is an answer, never retried
    assert strict["result"]["outcome"] == "gate_failed" and strict["result"]["exit_code"] == 1


def test_an_infrastructure_error_is_retried_then_fails_the_run(airflow: dict[str, Any]) -> None:
    down = airflow["down"]
    assert down["state"] == down["printed"] == "failed"
    assert down["tasks"]["monitor"] == ("failed", 3)  # exit 3: the first try and both retries
    assert {down["tasks"][t][0] for t in ("decide", "train", "gate", "rollout")} == {"upstream_failed"}
