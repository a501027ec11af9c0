"""Work that overlaps a training in threads: storing its snapshots, scoring the champion.

Both run while the challenger trains (LightGBM and numpy release the GIL while they
work), so a training step costs little more than the fit itself.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from evertrain._background import yield_to_training
from evertrain.data.snapshots import table_bytes, take_snapshot
from evertrain.data.tables import arrow_table
from evertrain.data.windows import Window
from evertrain.evaluate.evaluation import metric_names
from evertrain.evaluate.metrics import compute_many
from evertrain.evaluate.scoring import (
    Scored,
    importable,
    load_model,
    model_features,
    model_frame,
    predict_outputs,
)
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.formats import BoosterModel


class SnapshotWriter:
    """The snapshots of one training: tables now, stored and recorded in a thread meanwhile.

    The training needs only the tables (the worker gets them in memory or as Arrow files);
    encoding them as Parquet, writing them to the artifact store and recording them in
    lineage overlaps the training, from :meth:`start` (once the job is in the worker's
    hands: before that, the thread's Python work would hold up the step's own way to the
    fit). :meth:`wait` (before anything refers to them) gives their ids, or raises whatever
    went wrong there. The thread runs at a lower priority than the training; once the
    training is over nothing else runs, so :meth:`wait` stores the snapshots the thread has
    not begun in the calling thread, at its own priority, instead of waiting for the thread
    to get a share of a busy machine.
    """

    def __init__(
        self, store: Store, parts: list[tuple[str, Any, list[str]]], time_column: str | None
    ) -> None:
        self.tables = {role: arrow_table(frame) for role, frame, _ in parts}
        self._store = store
        self._time_column = time_column
        self._roles = [role for role, _, _ in parts]
        self._todo = list(parts)
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._save, name="evertrain-snapshots", daemon=True)

    def start(self) -> None:
        """Store the snapshots in a thread from now on."""
        if self._thread.ident is None:
            self._thread.start()

    def _save(self) -> None:
        yield_to_training()
        self._store_parts()

    def _store_parts(self) -> None:
        """Store the parts nobody has begun, one at a time, until none is left or one failed."""
        while self._error is None:
            with self._lock:
                if not self._todo:
                    return
                role, frame, sources = self._todo.pop(0)
            try:
                data = table_bytes(self.tables[role])
                snap = take_snapshot(
                    self._store, frame, sources=sources, time_column=self._time_column, data=data
                )
                self._ids[role] = snap.id
            except BaseException as exc:  # handed to the waiting thread
                self._error = exc

    def wait(self) -> dict[str, str]:
        self._store_parts()
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return {role: self._ids[role] for role in self._roles}


#: Models (of any stores) whose champion a process keeps between trainings; a controller
#: trains a handful, and each kept champion holds its model and a holdout's predictions.
KEPT_MODELS = 8


@dataclass(frozen=True)
class _Scoring:
    """A champion as last loaded here, and its predictions on the rows of the last holdout it
    scored (``keys``: the rows' content hashes, sorted; ``values``: its predictions, in that order)."""

    model: Any
    keys: np.ndarray | None = None
    values: np.ndarray | None = None


class ChampionScorer:
    """Scores the champion on the new holdout in a thread while the challenger trains.

    The gates need both models' scores on the same rows; the champion's do not depend on
    the challenger, so they are computed during training (LightGBM and numpy release the
    GIL while they work) instead of after it, from :meth:`start` (once the job is in the
    worker's hands) until the block ends. A failure here only means the evaluation scores
    the champion itself.

    A process that trains a model again and again (the controller) keeps, per model, the
    champion it loaded and its predictions on the last holdout, by row content: successive
    holdouts are mostly the same rows (the window moved by the rows that arrived since), so
    the champion predicts only the rows it has not seen. Only for LightGBM boosters, whose
    prediction for a row does not depend on the rows scored with it.
    """

    #: (store, model) -> the champion last scored there; one entry per model.
    _kept: ClassVar[dict[tuple[str, str], tuple[tuple[Any, ...], _Scoring]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def forget(cls) -> None:
        """Drop what this process keeps of the champions it scored (as a fresh process starts)."""
        with cls._lock:
            cls._kept.clear()

    def __init__(
        self,
        store: Store,
        spec: Spec,
        project: Path,
        champion: int | None,
        window: Window | None,
        wanted: bool,
    ) -> None:
        self.store = store
        self.spec = spec
        self.project = project
        self.champion = champion
        self.window = window
        self.wanted = wanted
        self.scores: dict[int, Scored] = {}
        #: Holdout rows the champion predicted itself (the others came from its last holdout).
        self.predicted_rows: int | None = None
        self._thread: threading.Thread | None = None

    def _work(self, version: int) -> None:
        yield_to_training()
        assert self.window is not None
        spec, store = self.spec, self.store
        with contextlib.suppress(Exception):
            with importable(str(self.project)):
                mv = store.registry.get_version(spec.model.name, version)
                place = (store.artifacts.url, spec.model.name)
                identity = (version, mv.artifact_sha256, tuple(spec.model.trusted_types))
                with self._lock:
                    kept = self._kept.get(place)
                scoring = kept[1] if kept is not None and kept[0] == identity else None
                if scoring is None:
                    scoring = _Scoring(load_model(store, mv, spec.model.trusted_types))
                predicted, scoring = self._predict(scoring)
                outputs, classes = predict_outputs(
                    scoring.model,
                    self.window.holdout,
                    self.window.columns.features,
                    spec.model.task,
                    spec.model.target,
                    predicted=predicted,
                )
                # What the gates and the report will ask of these scores, computed here while
                # the challenger trains rather than after it (the outputs keep the values).
                compute_many(metric_names(spec), outputs)
                with self._lock:
                    self._kept.pop(place, None)  # re-inserted last: the oldest entry goes first
                    self._kept[place] = (identity, scoring)
                    while len(self._kept) > KEPT_MODELS:
                        del self._kept[next(iter(self._kept))]
            self.scores[version] = Scored(outputs, classes)

    def _predict(self, scoring: _Scoring) -> tuple[np.ndarray | None, _Scoring]:
        """The champion's predictions on the holdout (rows it predicted last time taken from
        then) and what to keep of them; None where the model is not one whose rows are scored
        apart (it is then scored the ordinary way)."""
        assert self.window is not None
        model, task = scoring.model, self.spec.model.task
        if not isinstance(model, BoosterModel) or task not in ("binary", "multiclass", "regression"):
            return None, scoring
        features = model_features(model, self.window.columns.features)
        X = model_frame(self.window.holdout, features, categorical_as_category=True)
        method = model.predict if task == "regression" else model.predict_proba
        keys = pd.util.hash_pandas_object(X, index=False).to_numpy()
        todo = np.ones(len(keys), dtype=bool)
        out: np.ndarray | None = None
        if scoring.keys is not None and scoring.values is not None and len(scoring.keys):
            at = np.minimum(np.searchsorted(scoring.keys, keys), len(scoring.keys) - 1)
            todo = scoring.keys[at] != keys
            out = np.empty((len(keys), *scoring.values.shape[1:]), dtype=scoring.values.dtype)
            out[~todo] = scoring.values[at[~todo]]
        if out is None or todo.all():
            out = np.asarray(method(X))
        elif todo.any():
            out[todo] = np.asarray(method(X[todo]))
        self.predicted_rows = int(todo.sum())
        unique, first = np.unique(keys, return_index=True)
        return out, _Scoring(model, unique, out[first])

    def __enter__(self) -> ChampionScorer:
        return self

    def start(self) -> None:
        """Score the champion in a thread from now on (once; nothing when no scores are wanted)."""
        version = self.champion
        if self._thread is not None or not self.wanted or version is None:
            return
        if self.window is not None and len(self.window.holdout):
            self._thread = threading.Thread(
                target=self._work, args=(version,), name="evertrain-champion-scores", daemon=True
            )
            self._thread.start()

    def wait(self) -> dict[int, Scored]:
        """The champion's scores, by version, once its thread is done (none where it failed)."""
        if self._thread is not None:
            self._thread.join()
        return self.scores

    def __exit__(self, *exc: object) -> None:
        self.wait()


__all__ = ["ChampionScorer", "SnapshotWriter"]
