"""Which version answers a request, and the shadow copy that answers no one.

* **Champion** answers by default.
* **Canary**: a request whose key hashes below the canary share goes to the canary.
  The key is the ``X-Evertrain-Key`` header (say, a user id), else the request's first
  id, else random. It exists for stickiness only: the hash is keyed with a server-side
  secret (``EVERTRAIN_ROUTING_SECRET``, the same on every replica) and salted with the
  model and canary version, so the same key always reaches the same arm during a
  rollout, and since shares only grow step by step, a key in the canary at 10% stays in
  it at 50%; but no client can compute offline which key lands where. A client can still
  learn its arm from the answer (``model_version``), so the key is not a security
  boundary: what keeps a client from vetoing a canary is that failures caused by its
  input count against no arm (``Server``). ``serving.client_routing_key: false`` ignores
  client keys altogether (every request routed at random).
* **Shadow**: a copy of each request is handed to a worker thread through a bounded
  queue after the response is ready. The shadow's predictions are logged with arm
  ``shadow`` and never returned; when its queue is full the copy is dropped and counted,
  so a slow shadow cannot add to response time or change a response. The copies waiting
  when the worker is free are answered together, one model call per version (up to
  ``max_rows`` rows), each checked and logged on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evertrain.data.logs import ERRORS, PREDICTIONS, LogWriter
from evertrain.serve.batching import batchable, predict_together
from evertrain.serve.metrics import ServeMetrics
from evertrain.serve.models import Routes
from evertrain.store.names import CANARY, CHAMPION, SHADOW
from evertrain.train.inputs import InputError
from evertrain.train.predictor import LoadedModel

log = logging.getLogger("evertrain.serve.router")

KEY_HEADER = "x-evertrain-key"
_HASH_SPACE = float(1 << 64)


def bucket(key: str, salt: str, secret: bytes = b"") -> float:
    """A stable point in [0, 1) for ``key``: the same key, salt and secret always give the same point.

    A keyed BLAKE2b (a MAC): without ``secret`` nobody can tell a key's point in advance.
    """
    mac_key = hashlib.sha256(secret + b"\0" + salt.encode("utf-8", "surrogatepass")).digest()
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=mac_key).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def routing_secret(explicit: str | None, admin_token: str | None) -> bytes:
    """The routing hash's secret: ``EVERTRAIN_ROUTING_SECRET``, else one derived from the admin token.

    Derived (HMAC), so the hash never reveals the admin token; empty when neither is set.
    """
    if explicit:
        return explicit.encode("utf-8", "surrogatepass")
    if admin_token:
        return hmac.new(admin_token.encode("utf-8", "surrogatepass"), b"evertrain-routing", "sha256").digest()
    return b""


def choose(
    routes: Routes, key: str | None, rng: Callable[[], float] = random.random, secret: bytes = b""
) -> tuple[str, LoadedModel]:
    """The arm and model for one request (the champion must be loaded)."""
    champion = routes.champion
    canary = routes.canary
    if canary is not None and routes.share > 0.0:
        point = rng() if key is None else bucket(key, f"{routes.name}/{canary.version}", secret)
        if point < routes.share:
            return CANARY, canary
    if champion is None:
        raise LookupError(f"model {routes.name!r} has no champion loaded")
    return CHAMPION, champion


def prediction_rows(
    model: LoadedModel,
    arm: str,
    columns: dict[str, list[Any]],
    ids: list[str],
    predictions: list[Any],
    scores: list[float] | None,
    ts: float,
    latency_ms: float,
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """The prediction-log columns (docs/logs.md) of one answered request."""
    n = len(ids)
    cols: dict[str, list[Any]] = {
        "request_id": ids,
        "ts": [ts] * n,
        "model_version": [model.version] * n,
        "arm": [arm] * n,
        "latency_ms": [latency_ms] * n,
        "prediction": predictions,
        "score": scores if scores is not None else [None] * n,
    }
    cols.update(columns)
    types = {
        "request_id": "string",
        "ts": "float64",
        "model_version": "int64",
        "arm": "string",
        "latency_ms": "float64",
        "prediction": model.prediction_type,
        "score": "float64",
        **model.log_types,
    }
    return cols, types


def error_rows(
    model: LoadedModel, arm: str, ids: list[str], ts: float, latency_ms: float, kind: str, message: str
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """The error-log columns of a request that a model failed to answer."""
    n = len(ids)
    cols: dict[str, list[Any]] = {
        "request_id": ids,
        "ts": [ts] * n,
        "model_version": [model.version] * n,
        "arm": [arm] * n,
        "latency_ms": [latency_ms] * n,
        "kind": [kind] * n,
        "error": [message[:500]] * n,
    }
    types = {
        "request_id": "string",
        "ts": "float64",
        "model_version": "int64",
        "arm": "string",
        "latency_ms": "float64",
        "kind": "string",
        "error": "string",
    }
    return cols, types


@dataclass
class _Copy:
    model: LoadedModel
    instances: list[Any]
    ids: list[str]
    ts: float


class ShadowMirror:
    """One worker thread that runs shadow copies of requests, off the response path."""

    def __init__(
        self,
        logger: LogWriter,
        *,
        queue_max: int = 1000,
        metrics: ServeMetrics | None = None,
        clock: Callable[[], float] = time.time,
        max_rows: int = 1,
    ) -> None:
        self.logger = logger
        self.metrics = metrics
        self.clock = clock
        self.max_rows = max_rows
        self._queue: queue.Queue[_Copy | None] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None
        self.mirrored = 0
        self.dropped = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="evertrain-shadow", daemon=True)
            self._thread.start()

    def submit(self, model: LoadedModel, instances: list[Any], ids: list[str], ts: float) -> bool:
        """Hand a copy to the shadow without waiting; ``False`` (counted) when its queue is full."""
        try:
            self._queue.put_nowait(_Copy(model, instances, ids, ts))
        except queue.Full:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.shadow_dropped.labels(model.name).inc()
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued (within ``timeout``), then stop."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None

    def join_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued copy has run (tests and analysis use this)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            items = self._take()
            stop = items[-1] is None
            copies = [i for i in items if i is not None]
            try:
                if copies:
                    self._answer(copies)
            except Exception as exc:  # the shadow must never take anything down
                log.warning("shadow copies failed: %s", exc)
            finally:
                for _ in items:
                    self._queue.task_done()
            if stop:
                return

    def _take(self) -> list[_Copy | None]:
        """The next copy (waiting for one), and the ones queued behind it up to ``max_rows`` rows."""
        first = self._queue.get()
        items: list[_Copy | None] = [first]
        rows = 0 if first is None else len(first.ids)
        while first is not None and rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            items.append(item)
            if item is None:
                break
            rows += len(item.ids)
        return items

    def _answer(self, copies: list[_Copy]) -> None:
        """Check each copy on its own, then answer the valid copies of each version in one model call."""
        start = time.perf_counter()
        by_model: dict[int, list[tuple[_Copy, dict[str, list[Any]]]]] = {}
        for item in copies:
            try:
                columns = item.model.schema.columns(item.instances)
            except InputError as exc:
                self._error(item, "validation", str(exc), start)
                continue
            except Exception as exc:
                self._error(item, "model", f"{type(exc).__name__}: {exc}", start)
                continue
            by_model.setdefault(id(item.model), []).append((item, columns))
        for group in by_model.values():
            model = group[0][0].model
            if batchable(model):
                answers = predict_together(model, [columns for _, columns in group])
            else:
                answers = [predict_together(model, [columns])[0] for _, columns in group]
            for (item, columns), answer in zip(group, answers, strict=True):
                if isinstance(answer, Exception):
                    self._error(item, "model", f"{type(answer).__name__}: {answer}", start)
                else:
                    self._one(item, columns, answer, start)

    def _one(
        self,
        item: _Copy,
        columns: dict[str, list[Any]],
        answer: tuple[list[Any], list[float] | None],
        start: float,
    ) -> None:
        model = item.model
        predictions, scores = answer
        latency_ms = (time.perf_counter() - start) * 1000.0
        cols, types = prediction_rows(
            model, SHADOW, columns, item.ids, predictions, scores, item.ts, latency_ms
        )
        self.logger.offer(PREDICTIONS, model.name, cols, types, len(item.ids))
        self.mirrored += 1
        if self.metrics is not None:
            self.metrics.answered(model.name, model.version_label, SHADOW, len(item.ids), latency_ms / 1000.0)

    def _error(self, item: _Copy, kind: str, message: str, start: float) -> None:
        latency_ms = (time.perf_counter() - start) * 1000.0
        cols, types = error_rows(item.model, SHADOW, item.ids, item.ts, latency_ms, kind, message)
        self.logger.offer(ERRORS, item.model.name, cols, types, len(item.ids))
        if self.metrics is not None:
            self.metrics.error(item.model.name, SHADOW, item.model.version_label, SHADOW)


__all__ = [
    "KEY_HEADER",
    "ShadowMirror",
    "bucket",
    "choose",
    "error_rows",
    "prediction_rows",
    "routing_secret",
]
