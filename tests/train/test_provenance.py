"""The code version a training records is git's answer, read from the repository's files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from evertrain.__version__ import __version__
from evertrain.train import provenance
from evertrain.train.provenance import UNKNOWN, code_version, head_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(folder: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    out = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip()


def _commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name)
    _git(repo, "add", name)
    _git(repo, "commit", "-q", "-m", name)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [k for k in os.environ if k.startswith("GIT_")]:
        monkeypatch.delenv(name)
    folder = tmp_path / "repo"
    folder.mkdir()
    _git(folder, "init", "-q", "-b", "main")
    return folder


def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if git is started: the answer must come from the files."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("git was started")

    monkeypatch.setattr(provenance, "_ask_git", refuse)


def test_a_branch_commit_is_read_without_starting_git(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _commit(repo, "a")
    sha = _commit(repo, "b")
    (repo / "project").mkdir()
    _no_git(monkeypatch)
    assert code_version(repo) == sha
    assert code_version(repo / "project") == sha  # a project in a folder of the repository


def test_packed_refs_detached_head_and_worktrees_give_gits_answer(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _commit(repo, "a")
    second = _commit(repo, "b")
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert head_commit(repo) == second == _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", first)  # detached
    assert head_commit(repo) == first
    _git(repo, "checkout", "-q", "main")
    linked = repo.parent / "linked"
    _git(repo, "worktree", "add", "-q", "-b", "other", str(linked), first)
    assert head_commit(linked) == first == _git(linked, "rev-parse", "HEAD")
    third = _commit(linked, "c")  # a loose ref of the shared store, written by the worktree
    assert head_commit(linked) == third
    assert head_commit(repo) == second


def test_what_the_files_cannot_tell_is_left_to_git(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No commit yet: git is asked, has no answer either, and the evertrain version is recorded.
    assert head_commit(repo) is UNKNOWN
    assert code_version(repo) == f"evertrain-{__version__}"
    sha = _commit(repo, "a")
    # git settings in the environment change where git looks: git is asked.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(repo.parent))
    assert head_commit(repo) is UNKNOWN
    assert code_version(repo) == sha
    monkeypatch.delenv("GIT_CEILING_DIRECTORIES")
    # A HEAD git would not understand is not guessed at.
    (repo / ".git" / "HEAD").write_text("not a ref\n")
    assert head_commit(repo) is UNKNOWN


def test_a_folder_outside_any_repository_records_the_evertrain_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    if subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True).returncode == 0:
        pytest.skip("the temporary folder lies inside a git repository")
    assert code_version(folder) == f"evertrain-{__version__}"
    if head_commit(folder) is None:  # the files told (no filesystem boundary on the way)
        _no_git(monkeypatch)
        assert code_version(folder) == f"evertrain-{__version__}"
