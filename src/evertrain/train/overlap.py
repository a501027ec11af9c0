"""Work that overlaps a training in threads: storing its snapshots, scoring the champion.

Both run while the challenger trains (LightGBM and numpy release the GIL while they
work), so a training step costs little more than the fit itself.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from evertrain._background import yield_to_training
from evertrain.data.snapshots import table_bytes, take_snapshot
from evertrain.data.tables import arrow_table
from evertrain.data.windows import Window
from evertrain.evaluate.scoring import Scored, importable, load_model, predict_outputs
from evertrain.spec import Spec
from evertrain.store import Store


class SnapshotWriter:
    """The snapshots of one training: tables now, stored and recorded in a thread meanwhile.

    The training needs only the tables (the worker gets them in memory or as Arrow files);
    encoding them as Parquet, writing them to the artifact store and recording them in
    lineage overlaps the training. :meth:`wait` (before anything refers to them) gives their
    ids, or raises whatever went wrong there.
    """

    def __init__(
        self, store: Store, parts: list[tuple[str, Any, list[str]]], time_column: str | None
    ) -> None:
        self.tables = {role: arrow_table(frame) for role, frame, _ in parts}
        self._ids: dict[str, str] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._save, args=(store, parts, time_column), name="evertrain-snapshots", daemon=True
        )
        self._thread.start()

    def _save(self, store: Store, parts: list[tuple[str, Any, list[str]]], time_column: str | None) -> None:
        yield_to_training()
        try:
            for role, frame, sources in parts:
                data = table_bytes(self.tables[role])
                snap = take_snapshot(store, frame, sources=sources, time_column=time_column, data=data)
                self._ids[role] = snap.id
        except BaseException as exc:  # handed to the waiting thread
            self._error = exc

    def wait(self) -> dict[str, str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._ids)


class ChampionScorer:
    """Scores the champion on the new holdout in a thread while the challenger trains.

    The gates need both models' scores on the same rows; the champion's do not depend on
    the challenger, so they are computed during training (LightGBM and numpy release the
    GIL while they work) instead of after it. A failure here only means the evaluation
    scores the champion itself.
    """

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
        self._thread: threading.Thread | None = None

    def _work(self, version: int) -> None:
        yield_to_training()
        assert self.window is not None
        spec, store = self.spec, self.store
        with contextlib.suppress(Exception):
            with importable(str(self.project)):
                model = load_model(
                    store, store.registry.get_version(spec.model.name, version), spec.model.trusted_types
                )
                outputs, classes = predict_outputs(
                    model,
                    self.window.holdout,
                    self.window.columns.features,
                    spec.model.task,
                    spec.model.target,
                )
            self.scores[version] = Scored(outputs, classes)

    def __enter__(self) -> ChampionScorer:
        version = self.champion
        if self.wanted and version is not None and self.window is not None and len(self.window.holdout):
            self._thread = threading.Thread(
                target=self._work, args=(version,), name="evertrain-champion-scores", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()


__all__ = ["ChampionScorer", "SnapshotWriter"]
