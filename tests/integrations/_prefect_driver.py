"""Runs the example Prefect flow in Prefect's venv, once per scenario, and prints what Prefect recorded.

    python _prefect_driver.py FLOW_FILE SCENARIOS_JSON

SCENARIOS_JSON is a list of the flow's parameters; one JSON line per scenario comes out: the
flow run's state and message, its result, and each task run's name, state and run count as
Prefect's API (a local ephemeral server) has them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId


def main() -> None:
    spec = importlib.util.spec_from_file_location("prefect_flow", sys.argv[1])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for params in json.loads(sys.argv[2]):
        state = module.evertrain_cycle(**params, return_state=True)
        result: Any = state.result(raise_on_failure=False)
        flow_run = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run])))
        tasks = [
            {
                "name": r.name.rsplit("-", 1)[0],
                "state": r.state_type.value if r.state_type else None,
                "runs": r.run_count,
            }
            for r in sorted(runs, key=lambda r: r.expected_start_time or r.created)
        ]
        print(
            json.dumps(
                {
                    "state": state.type.value,
                    "message": state.message,
                    "result": result if isinstance(result, dict) else repr(result),
                    "tasks": tasks,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
