"""The one interface of a data source, apart from the sources, so that a source kind in a module of
its own (``dvc``, ``feast``) and :mod:`evertrain.data.sources`, which opens every kind, share it."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pandas as pd


def in_project(path: str, base: Path | None, *, resolve: bool = True, command: bool = False) -> str:
    """``path`` from the project folder ``base`` when relative; as given when absolute, a URL, or
    with no project folder. ``resolve``: made absolute with links followed. A ``command`` (a
    program to run) only when it has a folder in it: a bare name is looked up on PATH.

    >>> in_project("data/x.csv", Path("/p"), resolve=False), in_project("s3://b/x.csv", Path("/p"))
    ('/p/data/x.csv', 's3://b/x.csv')
    >>> [in_project(python, Path("/p"), command=True) for python in ("python3", "env/bin/python")]
    ['python3', '/p/env/bin/python']
    """
    if base is None or "://" in path or Path(path).is_absolute() or (command and os.sep not in path):
        return path
    return str((base / path).resolve()) if resolve and not command else str(base / path)


class Source(ABC):
    """A place labelled rows are read from."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def uri(self) -> str:
        """A stable name of what is read, recorded in ``snapshot_sources`` (no passwords).

        Read after :meth:`read`, it may name exactly what was read (a commit, a hash).
        """

    @abstractmethod
    def read(self) -> pd.DataFrame:
        """Every row the source holds, as a table with a fresh integer index."""
