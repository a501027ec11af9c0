"""The Kubeflow Pipelines example compiles with the real kfp SDK (in its own venv: kfp pins protobuf
below ours) into a pipeline whose one task is ``evertrain run --once --json``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from _tools import ROOT, tool_env, tool_venv

PIPELINE = ROOT / "examples" / "orchestrators" / "kubeflow_pipeline.py"


def test_the_pipeline_compiles_to_one_cycle_task(tmp_path: Path) -> None:
    bin_dir = tool_venv("kfp")
    out = tmp_path / "evertrain-cycle.yaml"
    done = subprocess.run(
        [str(bin_dir / "python"), str(PIPELINE), str(out)],
        env=tool_env(bin_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spec = yaml.safe_load(out.read_text())
    assert spec["pipelineInfo"]["name"] == "evertrain-cycle"
    container = spec["deploymentSpec"]["executors"]["exec-evertrain-cycle"]["container"]
    script = " ".join(container["args"])
    assert "evertrain run --once --json" in script and container["image"].endswith("evertrain:latest")
    task = spec["root"]["dag"]["tasks"]["evertrain-cycle"]
    assert not task["cachingOptions"].get("enableCache", False)  # every run is a new cycle
    assert task["retryPolicy"]["maxRetryCount"] == 2
    assert spec["root"]["inputDefinitions"]["parameters"]["project"]["defaultValue"] == "/project"
