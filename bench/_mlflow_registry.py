"""MLflow's side of ``bench/registry.py``; runs in MLflow's own virtual environment.

It imports nothing from evertrain. Usage: ``python _mlflow_registry.py ROOT``, then one
command per line on stdin, ``FLOW N`` with FLOW ``file`` or ``registry``; each answer
is one JSON line with the seconds that N versions took.

- ``file``: a model file written to disk is logged to a new run, registered with
  ``mlflow.register_model`` and made champion with ``set_registered_model_alias``.
- ``registry``: an already logged model is registered again and made champion.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow
from mlflow import MlflowClient

MODEL = "bench-model"


def main() -> None:
    root = Path(sys.argv[1])
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    experiment = client.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    model_file = root / "model.json"
    counter = 0

    def file_to_champion() -> None:
        nonlocal counter
        counter += 1
        model_file.write_text(json.dumps({"version": counter, "weights": [counter] * 256}))
        run = client.create_run(experiment)
        client.log_artifact(run.info.run_id, str(model_file), "model")
        version = mlflow.register_model(f"{run.info.artifact_uri}/model", MODEL)
        client.set_registered_model_alias(MODEL, "champion", version.version)

    file_to_champion()
    logged = client.get_model_version(MODEL, "1").source

    def registry_only() -> None:
        version = mlflow.register_model(logged, MODEL)
        client.set_registered_model_alias(MODEL, "champion", version.version)

    flows = {"file": file_to_champion, "registry": registry_only}
    print(json.dumps({"ready": True, "mlflow": mlflow.__version__}), flush=True)
    for line in sys.stdin:
        flow, count = line.split()
        start = time.perf_counter()
        for _ in range(int(count)):
            flows[flow]()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
