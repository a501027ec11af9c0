"""The one interface of a data source, apart from the sources, so that a source kind in a module of
its own (``dvc``, ``feast``) and :mod:`evertrain.data.sources`, which opens every kind, share it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import pandas as pd


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
