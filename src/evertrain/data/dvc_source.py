"""The ``dvc`` source: a DVC-tracked file or folder of a git repository, read at a git revision.

DVC keeps data beside git: the repository holds a small ``.dvc`` file per tracked path
with its content hash, and the data lies in a DVC remote. This source pins the revision
it is given (a branch, a tag, a commit; HEAD by default) to its commit, asks DVC for the
path's hash at that commit (``dvc ls --show-hash``) and fetches the data from the remote
(``dvc get``), so what a training read can be named exactly: the snapshot's lineage
records ``dvc:REPO/PATH@COMMIT#md5=HASH``.

evertrain drives the ``dvc`` and ``git`` commands rather than import DVC's Python package,
whose dependencies (a task queue, three git libraries) clash with a current stack: install
DVC as a team already does (``pipx install dvc``, or ``pip install dvc`` in any venv) and
have ``dvc`` on PATH. A ``.csv`` path is read as CSV; anything else as Parquet (a file,
or every ``*.parquet`` in a tracked folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evertrain.data.source_base import Source, in_project
from evertrain.exceptions import DataValidationError, StoreError, UsageError
from evertrain.store.redact import mask_text, mask_url

#: A full git commit id: used as given, never looked up.
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: Seconds a ``dvc``/``git`` command may take; a remote that hangs longer is an infrastructure error.
COMMAND_TIMEOUT = 600.0


def _is_url(repo: str) -> bool:
    return "://" in repo or re.match(r"[\w.-]+@[\w.-]+:", repo) is not None


class DvcSource(Source):
    """``path`` tracked by DVC in the git repository ``repo`` (a URL or a folder), at ``rev``."""

    kind = "dvc"

    def __init__(
        self, path: str, *, repo: str = ".", rev: str | None = None, base: Path | None = None
    ) -> None:
        self.path = path.strip("/")
        self.repo = repo
        self.rev = rev
        self.base = base
        #: The commit and the DVC hash of the last read (``None`` before it).
        self.commit_: str | None = None
        self.md5_: str | None = None

    @property
    def location(self) -> str:
        """The repository as DVC and git are given it: a URL, or a folder resolved from the project."""
        return self.repo if _is_url(self.repo) else in_project(self.repo, self.base)

    @property
    def shown(self) -> str:
        """The repository as lineage and messages name it: no password of a URL."""
        return mask_url(self.location) if _is_url(self.location) else self.location

    @property
    def uri(self) -> str:
        at = self.commit_ or self.rev or "HEAD"
        name = f"dvc:{self.shown.rstrip('/')}/{self.path}@{at}"
        return name if self.md5_ is None else f"{name}#md5={self.md5_}"

    def read(self) -> pd.DataFrame:
        commit = self._commit()
        md5 = self._hash(commit)
        with tempfile.TemporaryDirectory(prefix="evertrain-dvc-") as tmp:
            local = Path(tmp) / Path(self.path).name
            self._run(
                ["dvc", "get", "--rev", commit, self.location, self.path, "-o", str(local)],
                f"fetch {self.path!r} at {commit[:12]} from the DVC remote",
                StoreError,
            )
            try:
                if self.path.endswith(".csv"):
                    frame = pd.read_csv(local)
                else:  # a file, or a folder of Parquet files read as one dataset
                    frame = pq.read_table(local).to_pandas().reset_index(drop=True)
            except (OSError, ValueError, pa.ArrowInvalid) as exc:
                raise DataValidationError(
                    f"dvc source {self.path!r} at {commit[:12]}: cannot read it as "
                    f"{'CSV' if self.path.endswith('.csv') else 'Parquet'}: {exc}"
                ) from None
        self.commit_, self.md5_ = commit, md5
        return frame

    # -- the commands ---------------------------------------------------------------------

    def _run(self, args: list[str], doing: str, error: type[Exception]) -> str:
        """Run a ``dvc`` or ``git`` command; its stdout, or ``error`` with its last line."""
        tool = args[0]
        if shutil.which(tool) is None:
            hint = "pip install dvc (or pipx install dvc)" if tool == "dvc" else "install git"
            raise UsageError(f"a dvc source needs the {tool} command on PATH: {hint}")
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise StoreError(f"dvc source: cannot {doing}: {tool} took over {COMMAND_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            why = mask_text(next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else ""))
            raise error(
                f"dvc source: cannot {doing} ({self.shown}): {why or f'{tool} exited {done.returncode}'}"
            )
        return done.stdout

    def _commit(self) -> str:
        """The commit ``rev`` names now: a branch moves, the snapshot records where it was."""
        rev = self.rev or "HEAD"
        if _COMMIT.fullmatch(rev):
            return rev
        if not _is_url(self.location):
            if not Path(self.location).is_dir():
                raise DataValidationError(f"dvc source: repository folder {self.location} does not exist")
            out = self._run(
                [
                    "git",
                    "-C",
                    self.location,
                    "rev-parse",
                    "--verify",
                    "--end-of-options",
                    f"{rev}^{{commit}}",
                ],
                f"find revision {rev!r}",
                DataValidationError,
            )
            return out.strip()
        out = self._run(["git", "ls-remote", self.location, rev], f"find revision {rev!r}", StoreError)
        found = [line.split()[0] for line in out.splitlines() if line.strip()]
        if not found:
            raise DataValidationError(f"dvc source: revision {rev!r} not found in {self.shown}")
        return found[0]

    def _hash(self, commit: str) -> str:
        """The DVC hash of the path at ``commit`` (``.dir`` ends a folder's); refuses a path git holds."""
        parent, name = os.path.split(self.path)
        args = ["dvc", "ls", "--json", "--show-hash", "--rev", commit, self.location]
        listing: list[dict[str, Any]] = json.loads(
            self._run(
                [*args, parent] if parent else args,
                f"list {parent or 'the repository'!r}",
                DataValidationError,
            )
        )
        entry = next((e for e in listing if e.get("path") == name), None)
        if entry is None:
            raise DataValidationError(
                f"dvc source: {self.path!r} does not exist at {commit[:12]} in {self.shown}"
            )
        if not entry.get("md5"):
            raise DataValidationError(
                f"dvc source: {self.path!r} at {commit[:12]} is kept by git, not tracked by DVC "
                "(read it with a parquet or csv source, or `dvc add` it)"
            )
        return str(entry["md5"])
