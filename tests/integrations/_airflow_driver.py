"""Runs the example Airflow DAG in Airflow's venv, once per scenario, in one Airflow process.

    python _airflow_driver.py DAGS_FOLDER SCENARIOS_JSON

SCENARIOS_JSON is a list of the DAG's run parameters (``conf``). Each scenario is one DAG run
made by ``DAG.test``, what ``airflow dags test`` runs, on the metadata database of
``AIRFLOW_HOME``; one line per run comes out, ``run STATE``. Every ``airflow dags test``
pays Airflow's start (its imports, the DAG's parse, the in-process execution API) again; one
process pays it once, for the same runs recorded the same way.
"""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag


def main() -> None:
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("evertrain_cycle")
    assert dag is not None, "the example DAG did not load"
    for conf in json.loads(sys.argv[2]):
        run = dag.test(run_conf=conf)
        print(f"run {run.state}", flush=True)


if __name__ == "__main__":
    main()
