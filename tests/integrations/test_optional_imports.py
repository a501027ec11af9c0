"""The integrations are optional: the core CLI never imports them or their tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from evertrain.faces.cli import main

TOOLS = ("mlflow", "wandb", "prefect", "airflow", "kfp", "dvc", "feast", "evertrain.faces.integrations")

PROBE = """
import json, sys
from evertrain.faces.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def modules_after(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, check=False
    )
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["code"] == 0, out.stderr
    return [str(m) for m in last["modules"]]


def loaded_tools(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in TOOLS or m.startswith("evertrain.faces.integrations")]


def test_quick_commands_import_no_integration(tmp_path: Path) -> None:
    project = tmp_path / "churn"
    assert main(["init", str(project)]) == 0
    assert loaded_tools(modules_after("status", "--json", "--project", str(project))) == []
    assert loaded_tools(modules_after("--help")) == []
    assert loaded_tools(modules_after("mlflow", "--help")) == []  # the tool loads when a command runs
    assert loaded_tools(modules_after("feast", "--help")) == []


def test_a_cycle_without_tracking_imports_no_integration(tmp_path: Path) -> None:
    project = tmp_path / "churn"
    assert main(["init", str(project)]) == 0
    assert loaded_tools(modules_after("run", "--once", "--json", "--project", str(project))) == []
