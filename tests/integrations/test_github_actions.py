"""The GitHub Actions gate workflow: valid for GitHub (its published workflow schema), and its
job summary written from a real ``evertrain train --json`` result."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evertrain.faces.cli import main

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "github-actions" / "evertrain-gate.yml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    linter = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(linter).is_file():
        pytest.skip("check-jsonschema is not installed (pip install '.[test]')")
    return subprocess.run(
        [linter, "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_workflow_is_valid_and_a_broken_one_is_not(tmp_path: Path) -> None:
    checked = validate(WORKFLOW)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = yaml.safe_load(WORKFLOW.read_text())
    broken["jobs"]["gate"]["runs-on"] = {"wrong": True}  # the linter must catch a bad workflow
    del broken["jobs"]["gate"]["steps"][0]["uses"]
    bad = tmp_path / "broken.yml"
    bad.write_text(yaml.safe_dump(broken))
    assert validate(bad).returncode != 0


def test_the_job_summary_shows_the_gate_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = {s.get("name"): s for s in workflow["jobs"]["gate"]["steps"]}
    summary_step = steps["Post the gate report as the job summary"]
    assert summary_step["shell"] == "python"
    project = tmp_path / "churn"
    assert main(["init", str(project)]) == 0
    code = main(["train", "churn", "--project", str(project), "--json", str(project / "train.json")])
    assert code == 0
    summary = tmp_path / "summary.md"
    done = subprocess.run(
        [sys.executable, "-c", summary_step["run"]],
        cwd=project,
        env={"MODEL": "churn", "GITHUB_STEP_SUMMARY": str(summary), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert "## evertrain gate: churn" in text and "Version **1**: passed" in text
    assert "| threshold" in text and "| pass |" in text
