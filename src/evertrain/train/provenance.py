"""The code version a training records: the git commit of the project folder.

Asking ``git rev-parse HEAD`` starts a process, which from a controller with pandas and
LightGBM loaded took 5-7 ms of every training step, before the fit could start. In the
common case the answer is in two or three small files of the repository (``HEAD``, the
branch's ref, or ``packed-refs``), read here as git reads them: up from the project
folder to the first ``.git``, stopping where git stops (at a filesystem boundary, with no
answer). Anything else (a ref store other than files, git settings in the environment
that move its discovery, a repository of another user, a ref that does not resolve) is
left to git itself, so the answer is always git's.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from evertrain.__version__ import __version__

#: Seconds allowed for ``git rev-parse`` where the files cannot tell.
GIT_TIMEOUT_SECONDS = 5
_SHA1 = re.compile(r"[0-9a-f]{40}")
#: Environment variables that change where git finds a repository or how it reads its refs.
_GIT_ENVIRONMENT = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_NAMESPACE",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)
#: What :func:`head_commit` answers where only git can tell.
UNKNOWN = object()
#: Symbolic refs followed before giving up (git's own limit is 5).
_MAX_SYMREF_DEPTH = 5


def code_version(project: Path) -> str:
    """The git commit of the project folder, else the evertrain version that trained."""
    return git_commit(project) or f"evertrain-{__version__}"


def git_commit(folder: Path) -> str | None:
    """The commit of the git work tree holding ``folder``, if there is one."""
    sha = head_commit(folder)
    if sha is UNKNOWN:
        return _ask_git(folder)
    return sha if isinstance(sha, str) else None


def _ask_git(project: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(project), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and _SHA1.fullmatch(sha) else None


def head_commit(project: Path) -> str | object | None:
    """``HEAD``'s commit read from the repository's files; None when no repository holds
    ``project`` (git would find none either); :data:`UNKNOWN` where git must be asked (see
    the module doc). Never a different answer than git's."""
    if any(name in os.environ for name in _GIT_ENVIRONMENT):
        return UNKNOWN  # git's discovery or refs differ
    try:
        found = _git_dir(project.resolve())
        if not isinstance(found, tuple):
            return found
        git_dir, common = found
        value = (git_dir / "HEAD").read_text().strip()
        for _ in range(_MAX_SYMREF_DEPTH):
            if _SHA1.fullmatch(value):
                return value
            if not value.startswith("ref: "):
                return UNKNOWN
            value = _read_ref(git_dir, common, value[len("ref: ") :].strip())
            if value is None:
                return UNKNOWN  # no commit yet, or a ref these files do not hold
    except (OSError, UnicodeDecodeError, ValueError):
        return UNKNOWN
    return UNKNOWN


def _git_dir(start: Path) -> tuple[Path, Path] | object | None:
    """The git directory of the repository holding ``start`` and its common directory (they
    differ in a linked worktree); None when there is none; :data:`UNKNOWN` where git's own
    discovery must decide."""
    device = start.stat().st_dev
    for folder in (start, *start.parents):
        if folder.stat().st_dev != device:
            return None  # git stops at a filesystem boundary unless told otherwise
        dot_git = folder / ".git"
        if dot_git.is_dir():
            git_dir = dot_git
        elif dot_git.is_file():
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir: "):
                return UNKNOWN
            git_dir = (folder / text[len("gitdir: ") :].strip()).resolve()
        elif (folder / "HEAD").is_file():
            return UNKNOWN  # perhaps inside a bare repository, which git finds as it is
        else:
            continue
        owners = {folder.stat().st_uid, git_dir.stat().st_uid}
        if hasattr(os, "getuid") and owners != {os.getuid()}:
            return UNKNOWN  # git may refuse a repository of another user (safe.directory)
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        config = common / "config"
        if config.is_file() and "refstorage" in config.read_text().lower():
            return UNKNOWN  # refs kept other than as files (reftable)
        return git_dir, common
    return None  # no repository up to the root


def _read_ref(git_dir: Path, common: Path, name: str) -> str | None:
    """The content of ref ``name`` (a commit, or ``ref: ...`` for a symbolic ref)."""
    if ".." in name.split("/") or not name.startswith("refs/"):
        return None
    # Refs of a worktree's own (bisect, worktree) live in its git directory; the rest are shared.
    own = name.startswith(("refs/bisect/", "refs/worktree/", "refs/rewritten/"))
    loose = (git_dir if own else common) / name
    if loose.is_file():
        return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, ref = line.partition(" ")
            if ref == name and _SHA1.fullmatch(sha):
                return sha
    return None
