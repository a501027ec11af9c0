"""An Airflow DAG that runs one evertrain cycle per DAG run, each of its steps a task of its own.

Copy this file into your DAGs folder (Airflow 3), set the ``project`` parameter (the folder
that holds evertrain.yaml, as the workers see it) and the schedule you want. Each task runs
``evertrain run --once --json --step STEP``: the cycle goes on where the previous task left
it, and a retried task resumes its step without repeating finished work
(docs/orchestrators.md). The tasks act on the task contract's exit codes:

- exit 0: go on. ``decide`` is a branch: ``train`` and ``gate`` run only when the decision
  is to retrain, else they are skipped; ``rollout`` always runs, as it moves a canary on
  and closes the cycle.
- exit 1: a gate or the rollout said no. The task succeeds (the loop worked; the model did
  not pass), logs a warning, and its return value (XCom) carries the outcome.
- exit 2: usage or data error. The task fails at once (AirflowFailException): no retry.
- exit 3: infrastructure error. The task fails and Airflow retries it (``retries``).

Workers need the ``evertrain`` command and the store's URLs (``EVERTRAIN_DB_URL``,
``EVERTRAIN_ARTIFACTS_URL``); ``command`` names another way to start it.
"""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)


def evertrain_step(step: str) -> dict[str, Any]:
    """Run the cycle of the DAG run's project through ``step``; its JSON result."""
    params = get_current_context()["params"]
    done = subprocess.run(
        [*params["command"], "run", "--once", "--json", "--step", step, "--project", params["project"]],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stderr.splitlines():
        log.info("%s", line)
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:  # not evertrain's answer: the command itself could not run
        result = {"reason": (done.stderr.strip() or "no output").splitlines()[-1]}
    why = f"evertrain step {step} exited {done.returncode}: {result.get('reason')}"
    if done.returncode == 2:
        raise AirflowFailException(why)  # a usage or data error: retrying gives the same answer
    if done.returncode not in (0, 1):
        raise AirflowException(why)  # infrastructure: the retry resumes the step
    if done.returncode == 1:
        log.warning("evertrain said no: %s", result.get("reason"))
    return result


@dag(
    dag_id="evertrain_cycle",
    description="One evertrain cycle: monitor, decide, then train and gate if due, then roll out.",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # cycles of one project run one after the other
    # retried after [core] default_task_retry_delay (300 s unless set); exit 2 is never retried
    default_args={"retries": 2},
    params={
        "project": Param("/project", type="string", description="The evertrain project folder."),
        "command": Param(["evertrain"], type="array", description="How to start evertrain."),
    },
    tags=["evertrain"],
)
def evertrain_cycle() -> None:
    @task(multiple_outputs=False)
    def monitor() -> dict[str, Any]:
        result = evertrain_step("monitor")
        if "paused_after" not in result:  # the cycle ended already: another controller has the lease
            raise AirflowSkipException(result.get("reason") or result.get("outcome") or "cycle skipped")
        return result

    @task.branch
    def decide() -> str:
        result = evertrain_step("decide")
        return "train" if (result.get("decide") or {}).get("action") == "retrain" else "rollout"

    @task(multiple_outputs=False)
    def train() -> dict[str, Any]:
        return evertrain_step("train")

    @task(multiple_outputs=False)
    def gate() -> dict[str, Any]:
        return evertrain_step("gate")

    @task(trigger_rule="none_failed_min_one_success", multiple_outputs=False)
    def rollout() -> dict[str, Any]:
        return evertrain_step("rollout")  # the last step closes the cycle: its JSON is the cycle's

    decided = decide()
    closed = rollout()
    monitor() >> decided
    decided >> train() >> gate() >> closed
    decided >> closed


evertrain_cycle()
