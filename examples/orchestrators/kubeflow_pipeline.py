"""A Kubeflow Pipelines pipeline that runs one evertrain cycle as a task, on a schedule you set in KFP.

    pip install kfp
    python kubeflow_pipeline.py evertrain-cycle.yaml   # then upload it, or create a recurring run

The component runs ``evertrain run --once --json`` in the evertrain image against the
project's store (give the pod ``EVERTRAIN_DB_URL`` and ``EVERTRAIN_ARTIFACTS_URL``, e.g.
from a secret with kfp-kubernetes' ``use_secret_as_env``), writes the cycle's JSON as an
output artifact, and ends with the task contract's exit code: 0 nothing to do or done, 1 a
gate or rollout said no, 2 usage or data error, 3 infrastructure error
(docs/orchestrators.md). KFP retries any failed task; the retries are meant for 3, and a
cycle that resumes repeats no finished step.
"""

import sys

from kfp import compiler, dsl

IMAGE = "ghcr.io/evertrain/evertrain:latest"  # build it from the project's Dockerfile


@dsl.container_component
def evertrain_cycle(project: str, cycle: dsl.Output[dsl.Artifact]) -> dsl.ContainerSpec:
    """One controller cycle of the project at PROJECT (a folder in the image or a mounted volume)."""
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c"],
        args=[
            'mkdir -p "$(dirname "$1")" && evertrain run --once --json "$1" --project "$0"',
            project,
            cycle.path,
        ],
    )


@dsl.pipeline(
    name="evertrain-cycle", description="One evertrain cycle: monitor, decide, train, gate, roll out."
)
def evertrain_pipeline(project: str = "/project") -> None:
    task = evertrain_cycle(project=project)
    task.set_caching_options(False)  # every run is a new cycle, never a cached one
    task.set_retry(num_retries=2, backoff_duration="60s")
    task.set_cpu_limit("2").set_memory_limit("4G")


if __name__ == "__main__":
    compiler.Compiler().compile(
        evertrain_pipeline, sys.argv[1] if len(sys.argv) > 1 else "evertrain-cycle.yaml"
    )
