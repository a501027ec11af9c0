"""A Prefect flow that runs one evertrain cycle, each of its steps a Prefect task.

    pip install prefect
    python prefect_flow.py /path/to/project        # one cycle now, printed as JSON
    # on a schedule: evertrain_cycle.serve(name="evertrain", interval=3600, parameters={...})

Each task runs ``evertrain run --once --json --step STEP``: the cycle goes on where the
previous task left it, and a task that is retried resumes its step without repeating
finished work (docs/orchestrators.md). The flow branches on what each task answers:

- exit 0: go on. After ``decide``, ``train`` and ``gate`` run only when the decision is to
  retrain; ``rollout`` always runs, as it moves a canary on and closes the cycle.
- exit 1: a gate or the rollout said no. Nothing to retry: the cycle is closed and the flow
  completes, with the outcome in its result and a warning in its log.
- exit 2: usage or data error. The task fails at once, without retries: fix the input.
- exit 3: infrastructure error. The task is retried (``retries``), then fails.

The flow runs where the ``evertrain`` command can reach the project's store (give it
``EVERTRAIN_DB_URL`` and ``EVERTRAIN_ARTIFACTS_URL`` for a shared one); ``command`` names
another way to start it, such as ``["docker", "run", "--rm", "IMAGE", "evertrain"]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

RETRYABLE = 3  # the task contract's infrastructure exit code


class StepFailed(Exception):
    """An evertrain step that ended with exit 2 (usage or data) or 3 (infrastructure)."""

    def __init__(self, step: str, exit_code: int, result: dict[str, Any]) -> None:
        super().__init__(f"evertrain step {step} exited {exit_code}: {result.get('reason')}")
        self.step, self.exit_code, self.result = step, exit_code, result


def _infrastructure_only(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    """Retry a step that failed for the infrastructure (exit 3), never a usage or data error."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, StepFailed) or error.exit_code == RETRYABLE


@task(retries=2, retry_delay_seconds=60, retry_condition_fn=_infrastructure_only)
def evertrain_step(step: str, project: str, command: list[str]) -> dict[str, Any]:
    """Run the cycle through ``step``; its JSON result, or StepFailed for exit 2 and 3."""
    logger = get_run_logger()
    done = subprocess.run(
        [*command, "run", "--once", "--json", "--step", step, "--project", project],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stderr.splitlines():
        logger.info(line)
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:  # not evertrain's answer: the command itself could not run
        result = {"outcome": "failed", "reason": (done.stderr.strip() or "no output").splitlines()[-1]}
    if done.returncode not in (0, 1):
        raise StepFailed(step, done.returncode, result)
    return result


@flow(name="evertrain-cycle")
def evertrain_cycle(
    project: str = ".",
    command: list[str] | None = None,
    retries: int = 2,
    retry_delay_seconds: float = 60.0,
) -> dict[str, Any]:
    """One evertrain cycle of PROJECT: monitor, decide, then train and gate if due, then rollout."""
    logger = get_run_logger()
    evertrain = command or ["evertrain"]

    def step(name: str) -> dict[str, Any]:
        run = evertrain_step.with_options(
            name=f"evertrain-{name}", retries=retries, retry_delay_seconds=retry_delay_seconds
        )
        return run(name, project, evertrain)

    result = step("monitor")
    if "paused_after" in result:  # else the cycle ended already (another controller holds the lease)
        result = step("decide")
        if (result.get("decide") or {}).get("action") == "retrain":
            step("train")
            result = step("gate")
        if "paused_after" in result:  # a passed or failed gate still leaves the rollout step
            result = step("rollout")
    if result.get("exit_code") == 1:
        logger.warning("evertrain said no: %s", result.get("reason"))
    else:
        logger.info(
            "evertrain cycle %s: %s (%s)", result.get("cycle"), result.get("outcome"), result.get("reason")
        )
    return result


if __name__ == "__main__":
    print(json.dumps(evertrain_cycle(sys.argv[1] if len(sys.argv) > 1 else ".")))
