"""The ``dvc`` source reads a DVC-tracked file at a git revision from a real git + DVC repository with
a local DVC remote (DVC in its own venv, driven through its command line), and the training's lineage
names the commit and the DVC hash it read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _tools import tool_venv

from evertrain.data.dvc_source import DvcSource
from evertrain.exceptions import DataValidationError, UsageError
from evertrain.faces.cli import main


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def dvc_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only DVC's command in it, to put on PATH (not the venv's python)."""
    folder = tmp_path_factory.mktemp("dvc-bin")
    (folder / "dvc").symlink_to(tool_venv("dvc") / "dvc")
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, dvc_bin: Path) -> dict[str, object]:
    """A project that is a git + DVC repository: data/churn.csv with 1,500 rows at tag v1 and 4,000
    at the next commit, both pushed to a local remote, then dropped from the cache and the workspace
    (so a read must come from the remote at the revision)."""
    base = tmp_path_factory.mktemp("dvc")
    project, remote = base / "churn", base / "remote"
    assert main(["init", str(project)]) == 0
    everything = pd.read_csv(project / "data" / "churn.csv")
    env_path = f"{dvc_bin}{os.pathsep}{os.environ['PATH']}"
    os.environ["PATH"], saved = env_path, os.environ["PATH"]
    try:
        sh("git", "init", "-q", "-b", "main", cwd=project)
        sh("git", "config", "user.email", "ci@example.com", cwd=project)
        sh("git", "config", "user.name", "CI", cwd=project)
        sh("dvc", "init", "-q", cwd=project)
        sh("dvc", "config", "core.analytics", "false", cwd=project)
        sh("dvc", "remote", "add", "-d", "storage", str(remote), cwd=project)
        everything.head(1500).to_csv(project / "data" / "churn.csv", index=False)
        sh("dvc", "add", "-q", "data/churn.csv", cwd=project)
        sh("git", "add", "-A", cwd=project)
        sh("git", "commit", "-qm", "first 1500 rows", cwd=project)
        sh("git", "tag", "v1", cwd=project)
        v1_md5 = yaml.safe_load((project / "data" / "churn.csv.dvc").read_text())["outs"][0]["md5"]
        sh("dvc", "push", "-q", cwd=project)
        everything.to_csv(project / "data" / "churn.csv", index=False)
        sh("dvc", "add", "-q", "data/churn.csv", cwd=project)
        sh("git", "add", "-A", cwd=project)
        sh("git", "commit", "-qm", "all rows", cwd=project)
        sh("dvc", "push", "-q", cwd=project)
    finally:
        os.environ["PATH"] = saved
    head_md5 = yaml.safe_load((project / "data" / "churn.csv.dvc").read_text())["outs"][0]["md5"]
    (project / "data" / "churn.csv").unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    return {
        "project": project,
        "v1": sh("git", "rev-parse", "v1", cwd=project),
        "head": sh("git", "rev-parse", "HEAD", cwd=project),
        "v1_md5": v1_md5,
        "head_md5": head_md5,
    }


@pytest.fixture
def on_path(dvc_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{dvc_bin}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.usefixtures("on_path")
def test_reads_the_rows_of_a_revision_and_names_it(repo: dict[str, object]) -> None:
    project = repo["project"]
    assert isinstance(project, Path)
    old = DvcSource("data/churn.csv", rev="v1", base=project)
    assert len(old.read()) == 1500
    assert old.uri == f"dvc:{project}/data/churn.csv@{repo['v1']}#md5={repo['v1_md5']}"
    new = DvcSource("data/churn.csv", base=project)  # HEAD
    frame = new.read()
    assert len(frame) == 4000 and list(frame.columns)[:2] == ["ts", "label_ts"]
    assert new.uri.endswith(f"@{repo['head']}#md5={repo['head_md5']}")


@pytest.mark.usefixtures("on_path")
def test_a_training_records_the_revision_in_lineage(
    repo: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    project = repo["project"]
    assert isinstance(project, Path)
    spec_file = project / "evertrain.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["data"]["source"] = {"kind": "dvc", "path": "data/churn.csv", "rev": "v1"}
    spec["training"]["window"] = {"kind": "sliding", "rows": 1000}
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["train", "churn", "--project", str(project)]) == 0
    capsys.readouterr()
    assert main(["lineage", "churn", "1", "--json", "-", "--project", str(project)]) == 0
    lineage = json.loads(capsys.readouterr().out)
    sources = {s for snap in lineage["snapshots"] for s in snap["sources"]}
    assert sources == {f"dvc:{project}/data/churn.csv@{repo['v1']}#md5={repo['v1_md5']}"}


@pytest.mark.usefixtures("on_path")
def test_bad_revisions_and_paths_are_named(repo: dict[str, object]) -> None:
    project = repo["project"]
    assert isinstance(project, Path)
    with pytest.raises(DataValidationError, match="revision 'v9'"):
        DvcSource("data/churn.csv", rev="v9", base=project).read()
    with pytest.raises(DataValidationError, match=r"'data/missing\.csv' does not exist"):
        DvcSource("data/missing.csv", base=project).read()
    with pytest.raises(DataValidationError, match="kept by git, not tracked by DVC"):
        DvcSource("evertrain.yaml", base=project).read()


def test_without_dvc_the_error_says_how_to_get_it(
    repo: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    git = shutil.which("git")
    assert git is not None
    (tmp_path / "git").symlink_to(git)
    monkeypatch.setenv("PATH", str(tmp_path))  # git, and no dvc
    with pytest.raises(UsageError, match="needs the dvc command on PATH: pip install dvc"):
        DvcSource("data/churn.csv", rev="v1", base=Path(str(repo["project"]))).read()
