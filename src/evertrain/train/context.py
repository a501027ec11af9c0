"""What every trainer kind shares: the context it is told and the interface it implements.

Kept apart from :mod:`evertrain.train.trainers` so that a trainer in a module of its own
(:mod:`evertrain.train.lora`) builds on it while ``trainers`` lists every kind.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from evertrain.evaluate.scoring import model_frame
from evertrain.exceptions import DataValidationError, TrainingFailed


@dataclass
class TrainContext:
    """What a trainer is told besides the data, and where it leaves what it learned about itself."""

    task: str
    target: str
    features: list[str]
    seed: int = 0
    weight_column: str | None = None
    parent: Any | None = None
    checkpoint_dir: Path | None = None
    #: Boosting iterations between checkpoints (None: by time only).
    checkpoint_every: int | None = None
    #: Seconds of training between checkpoints (None: by iterations only).
    checkpoint_seconds: float | None = 30.0
    early_stopping_rounds: int | None = None
    deadline: float | None = None
    #: What a checkpoint must match to be resumed (the job and its data); a callable is
    #: computed on first use, since it is needed only once a checkpoint is read or written.
    fingerprint: str | Callable[[], str] = ""
    num_threads: int | None = None
    log: Callable[[str], None] = print
    #: The project folder (relative paths in the trainer's settings are read from it).
    project: Path | None = None
    #: Scores the holdout tree by tree while a boosted model trains (see ``tree_scoring``).
    tree_scorer: Any | None = None
    #: Where :meth:`progress` reports go (the job's progress file; None: nowhere).
    on_progress: Callable[[int, int | None, str], None] | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def xy(
        self, frame: pd.DataFrame, *, categorical_as_category: bool = False
    ) -> tuple[pd.DataFrame, pd.Series]:
        if self.target not in frame.columns:
            raise DataValidationError(f"target column {self.target!r} is not in the training rows")
        return model_frame(frame, self.features, categorical_as_category=categorical_as_category), frame[
            self.target
        ]

    def weights(self, frame: pd.DataFrame) -> np.ndarray | None:
        if self.weight_column and self.weight_column in frame.columns:
            return frame[self.weight_column].to_numpy(dtype=float)
        return None

    def job_fingerprint(self) -> str:
        if callable(self.fingerprint):
            self.fingerprint = self.fingerprint()
        return self.fingerprint

    def progress(self, done: int, total: int | None = None, what: str = "iteration") -> None:
        """Tell whoever watches the training how far it has come: ``done`` of ``total``
        iterations (boosting rounds, optimizer steps; ``total`` None when not known).

        Cheap enough to call every iteration: reports are written a few times a second at
        most (:mod:`evertrain.train.progress`). A callable trainer may call it too.
        """
        if self.on_progress is not None:
            self.on_progress(done, total, what)

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def check_deadline(self, where: str, *, passed: bool | None = None) -> None:
        """Fail the training if it ran past its time limit (``passed``: as the caller found,
        for ranks that must stop together)."""
        late = self.past_deadline() if passed is None else passed
        if late:
            raise TrainingFailed(f"training ran past its time limit ({where})")


class Trainer(ABC):
    """Fits a model on ``train`` (``valid`` for early stopping where the library has it)."""

    kind: ClassVar[str]

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    @abstractmethod
    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext) -> Any:
        """A fitted model with ``predict`` (and ``predict_proba`` for classifiers)."""


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``path`` whole or not at all (temporary file, then rename).

    ``durable`` also flushes it to disk before the rename; checkpoints skip that, since a
    checkpoint lost to a power cut only means resuming from an older one, or from scratch.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
