"""Replaying a table through the loop on a simulated clock: the engine of ``backtest``.

Batch by batch, the current champion (and canary, at its share) scores the rows; the
predictions go to the prediction log exactly as a serving replica writes them
(``docs/logs.md``), labels arrive ``label_delay`` batches later as feedback and as new
rows of the offline source that training reads, and then the real controller runs one
cycle: the same monitor, policy, trainer, gates and rollout as in production, minus
HTTP. Every file a batch writes has a name fixed by its batch number, so a replay
killed at any point and started again rewrites the same bytes and resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evertrain.controller.clock import ManualClock
from evertrain.controller.loop import Controller
from evertrain.data.logs import FEEDBACK, PREDICTIONS, partition_date, partition_folder, read_log
from evertrain.exceptions import NotFoundError
from evertrain.serve.models import read_desired
from evertrain.serve.router import bucket
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.names import CANARY, CHAMPION
from evertrain.train.predictor import LoadedModel, load_version

ARMS = (CHAMPION, CANARY)


@dataclass
class BatchSource:
    """A stream cut in batches.

    ``served(i)`` is batch ``i`` as production sees it, ``offline(i)`` as the warehouse records it.
    """

    n_batches: int
    served: Callable[[int], pd.DataFrame]
    offline: Callable[[int], pd.DataFrame] | None = None

    def offline_batch(self, index: int) -> pd.DataFrame:
        return (self.offline or self.served)(index)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, batch_size: int) -> BatchSource:
        n = max(1, int(np.ceil(len(frame) / batch_size)))
        return cls(n, lambda i: frame.iloc[i * batch_size : (i + 1) * batch_size].reset_index(drop=True))


@dataclass
class Replay:
    """Drive ``controller`` over ``source``; ``batch_seconds`` of simulated time per batch."""

    store: Store
    spec: Spec
    project: Path
    source: BatchSource
    clock: ManualClock
    start: float
    batch_seconds: float
    label_delay_batches: int
    warm_batches: int = 0  # batches already labelled before the replay starts
    controller: Controller | None = None
    _models: dict[int, LoadedModel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.controller is None:
            # One holder name across restarts: a replay killed and started again takes its lease back.
            self.controller = Controller(
                self.store, self.spec, self.project, clock=self.clock, holder="replay"
            )
        (self.project / "warehouse").mkdir(parents=True, exist_ok=True)

    # -- files, named by batch so that a rerun rewrites the same bytes ---------------------

    def _logs_root(self) -> str:
        return self.store.logs_url or str(self.project / ".evertrain" / "logs")

    def _log_path(self, kind: str, index: int, at: float) -> str:
        """The part of one log that batch ``index`` writes, in the day partition of ``at``."""
        folder = partition_folder(self._logs_root(), kind, self.spec.model.name, partition_date(at))
        return f"{folder}/part-b{index:06d}.parquet"

    @staticmethod
    def _write(path: str, table: pa.Table) -> None:
        fs, p = fsspec.core.url_to_fs(path)
        fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
        tmp = p + ".tmp"
        with fs.open(tmp, "wb") as fh:
            pq.write_table(table, fh)
        fs.mv(tmp, p)

    def event_times(self, index: int, n: int) -> np.ndarray:
        """Event times of a batch's rows, spread over its period after the previous cycle."""
        first = self.start + (index - self.warm_batches) * self.batch_seconds
        return first + np.linspace(1.0, self.batch_seconds * 0.9, n)

    def _warehouse(self, index: int, labelled_at: float) -> None:
        frame = self.source.offline_batch(index).copy()
        frame[self.spec.data.time_column or "event_ts"] = self.event_times(index, len(frame))
        frame[self.spec.data.label_time_column or "label_ts"] = labelled_at
        path = self.project / "warehouse" / f"batch-{index:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)

    # -- serving without HTTP ---------------------------------------------------------------

    def _model(self, version: int) -> LoadedModel:
        """The version as a serving replica loads it (schema checks and all), cached."""
        if version not in self._models:
            self._models[version] = load_version(
                self.store, self.spec.model.name, version, spec=self.spec.model
            )
        return self._models[version]

    def serve(self, index: int) -> float | None:
        """Score batch ``index`` as production would and log it; the served accuracy (None if no model).

        Routing is the serving router's: the champion, and the canary for the requests whose
        stable bucket falls under the rollout's share.
        """
        frame = self.source.served(index)
        target = self.spec.model.target
        features = self.spec.model.features or [c for c in frame.columns if c != target]
        name = self.spec.model.name
        try:
            desired = read_desired(self.store, name, self.spec.rollout)
        except NotFoundError:
            return None
        if desired.champion is None:
            return None
        ids = self.request_ids(index, len(frame))
        arms = np.array([CHAMPION] * len(frame), dtype=object)
        if desired.canary is not None and desired.share > 0:
            salt = f"{name}/{desired.canary}"
            arms[np.array([bucket(r, salt) < desired.share for r in ids])] = CANARY
        preds = np.empty(len(frame), dtype=float)
        scores = np.full(len(frame), np.nan)
        versions = np.full(len(frame), desired.champion, dtype=np.int64)
        # A replay serves no request over a network: it logs no latency (null), so the
        # rollout analysis judges replayed canaries on errors and quality, never on timing
        # noise of the machine running the backtest.
        latency = np.full(len(frame), np.nan)
        for arm, version in ((CHAMPION, desired.champion), (CANARY, desired.canary)):
            mask = arms == arm
            if version is None or not mask.any():
                continue
            part = frame.loc[mask, features]
            answer, score = self._model(version).predict({c: part[c].tolist() for c in features})
            preds[mask] = np.asarray(answer, dtype=float)
            if score is not None:
                scores[mask] = np.asarray(score, dtype=float)
            versions[mask] = version
        at = self.event_times(index, len(frame))
        table = pa.table(
            {
                "request_id": ids,
                "ts": at,
                "model_version": versions,
                "arm": arms.astype(str),
                "latency_ms": pa.array(latency, mask=np.isnan(latency)),
                "prediction": preds,
                "score": pa.array(scores, mask=np.isnan(scores)),
                # from_pandas: a gap (NaN or None) is logged as null, whatever the column's type.
                **{c: pa.Array.from_pandas(frame[c]) for c in features},
            }
        )
        path = self._log_path(PREDICTIONS, index, float(at[0]))
        fs, p = fsspec.core.url_to_fs(path)
        if fs.exists(p):  # a batch served before a crash stays as it was served
            with fs.open(p, "rb") as fh:
                preds = pq.read_table(fh, columns=["prediction"])["prediction"].to_numpy()
        else:
            self._write(path, table)
        return float(np.mean(preds == frame[target].to_numpy(dtype=float)))

    def request_ids(self, index: int, n: int) -> list[str]:
        return [f"b{index:06d}-{j:05d}" for j in range(n)]

    def deliver_labels(self, index: int, now: float) -> None:
        """Labels of batch ``index`` arrive at ``now``: feedback for served rows, rows for the warehouse."""
        frame = self.source.served(index)
        if self.was_served(index):
            self.send_feedback(index, self.request_ids(index, len(frame)), frame[self.spec.model.target], now)
        self._warehouse(index, now)

    def was_served(self, index: int) -> bool:
        """Whether batch ``index`` reached a model (before the first model, traffic goes unanswered).

        Its own part of the prediction log, or, once the loop's compaction has merged that
        part into a larger one, its first row in the log: a batch served before a
        compaction gets its labels like any other.
        """
        first = float(self.event_times(index, 1)[0])
        fs, p = fsspec.core.url_to_fs(self._log_path(PREDICTIONS, index, first))
        if fs.exists(p):
            return True
        rows = read_log(
            self._logs_root(),
            PREDICTIONS,
            self.spec.model.name,
            since=first - 1.0,
            until=first,
            columns=["ts"],
        )
        return rows.num_rows > 0

    def send_feedback(self, index: int, ids: list[str], labels: pd.Series, now: float) -> None:
        """Write the feedback log rows of one batch, as the serving app does on ``:feedback``."""
        table = pa.table(
            {"request_id": ids, "label": labels.to_numpy(dtype=float), "ts": np.full(len(ids), now)}
        )
        self._write(self._log_path(FEEDBACK, index, now), table)

    # -- the replay ---------------------------------------------------------------------

    def prepare(self) -> None:
        for i in range(self.warm_batches):
            self._warehouse(i, self.start)

    def before_cycle(self) -> None:
        """Runs after a batch's traffic and labels, before the controller looks (the demo flushes logs)."""

    def batch(self, index: int) -> dict[str, Any]:
        """Serve batch ``index``, deliver the labels that are due, and run one controller cycle."""
        assert self.controller is not None
        served_at = self.start + (index - self.warm_batches) * self.batch_seconds
        self.clock.set(served_at + 1.0)  # traffic comes after the previous cycle looked
        accuracy = self.serve(index)
        now = served_at + self.batch_seconds
        self.clock.set(now)
        due = index - self.label_delay_batches
        if due >= self.warm_batches:
            self.deliver_labels(due, now)
        self.before_cycle()
        result = self.controller.cycle()
        return {"batch": index, "accuracy": accuracy, "cycle": result}

    def next_batch(self) -> int:
        """Where a replay stands: the batch of a cycle that did not finish, or the one after the last."""
        assert self.controller is not None
        last = self.controller.last_cycle()
        if last is None:
            return self.warm_batches
        number, status = last
        return self.warm_batches + number - (1 if status == "running" else 0)

    def run(self, on_batch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Replay every batch not replayed yet (all of them on a fresh project); resumes after a kill."""
        # Always: prepare() rewrites the same bytes, and a replay killed while preparing has
        # some warm batches on disk but not all (skipping it then trains a different first model).
        self.prepare()
        results = []
        for index in range(self.next_batch(), self.source.n_batches):
            result = self.batch(index)
            results.append(result)
            if on_batch is not None:
                on_batch(result)
        return results
