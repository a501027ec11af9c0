"""Adaptive batching: predict requests to one model version that arrive together share one model call.

Calling a tree ensemble costs about the same for one row as for a few dozen (thread
start-up and per-call checks, not rows, dominate), so under concurrency each request
calling the model alone spends most of the server's time on overhead. Here the
requests in progress on one served model are counted from the moment they arrive; a
request whose input has passed validation joins the batch gathering for its version
(champion, canary and shadow each have their own), and the batch is answered by one
model call as soon as:

* every request in progress on that model has joined a batch or left, and the batch
  holds as many requests as the version's previous batch (under steady concurrency the
  clients answered together send again together: waiting for them keeps batches full;
  a lone client's previous batch held one request, so it is answered at once),
* its first request has waited ``max_wait_ms`` (a slow body or a client that went quiet
  cannot hold the others; the next batch then expects only as many as came), or
* it holds ``max_rows`` rows.

Each request keeps its own share of the answer, its own latency (the time it waited
plus the model call) and, when the model fails on the batch, its own verdict: the
batch is asked again request by request, so a request the model cannot take fails
alone and its neighbours are answered. The model runs on the event loop, as an
unbatched call would; batches form while it runs, from the requests that arrive
meanwhile.

A model that cannot take batches says so with ``batchable = False`` on its estimator
(a model whose answer for a row depends on the other rows of the call); its requests,
and every request when ``serving.batching.enabled`` is false, call it alone.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evertrain.serve.metrics import ServeMetrics
from evertrain.spec import BatchingSpec
from evertrain.train.predictor import LoadedModel

#: A model's answer for one request's rows: the predictions and, for a binary classifier, the scores.
Answer = tuple[list[Any], list[float] | None]


def batchable(model: LoadedModel) -> bool:
    """Whether ``model`` may answer several requests in one call (its estimator's ``batchable``)."""
    return getattr(model.estimator, "batchable", True) is not False


def predict_together(model: LoadedModel, parts: Sequence[dict[str, list[Any]]]) -> list[Answer | Exception]:
    """Each part's answer (or its own failure) from one call of ``model`` on all the parts' rows.

    When the call on the joined rows fails, or answers the wrong number of rows, every
    part is asked alone, so that the failure is charged to the parts that cause it.

    >>> from types import SimpleNamespace
    >>> double = SimpleNamespace(
    ...     schema=SimpleNamespace(names=("x",)),
    ...     predict=lambda cols: ([2 * v if v >= 0 else 1 / 0 for v in cols["x"]], None),
    ... )
    >>> predict_together(double, [{"x": [1.0]}, {"x": [2.0, 3.0]}])
    [([2.0], None), ([4.0, 6.0], None)]
    >>> [type(a).__name__ for a in predict_together(double, [{"x": [1.0]}, {"x": [-1.0]}])]
    ['tuple', 'ZeroDivisionError']
    """
    if len(parts) == 1:
        return [_alone(model, parts[0])]
    names = model.schema.names
    joined = {n: list(itertools.chain.from_iterable(p[n] for p in parts)) for n in names}
    sizes = [len(p[names[0]]) if names else 0 for p in parts]
    try:
        predictions, scores = model.predict(joined)
    except Exception:
        return [_alone(model, p) for p in parts]
    if len(predictions) != sum(sizes) or (scores is not None and len(scores) != sum(sizes)):
        return [_alone(model, p) for p in parts]
    out: list[Answer | Exception] = []
    start = 0
    for size in sizes:
        end = start + size
        out.append((predictions[start:end], None if scores is None else scores[start:end]))
        start = end
    return out


def _alone(model: LoadedModel, columns: dict[str, list[Any]]) -> Answer | Exception:
    try:
        return model.predict(columns)
    except Exception as exc:
        return exc


class Ticket:
    """One predict request in progress: counted as on its way to a batch until it joins one or leaves."""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False


@dataclass
class _Entry:
    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[tuple[Answer, float]]
    joined: float


@dataclass
class _Batch:
    model: LoadedModel
    entries: list[_Entry] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    due: bool = False


class Batches:
    """The batches gathering for one served model (one per version), and the requests on their way."""

    def __init__(self, name: str, spec: BatchingSpec, metrics: ServeMetrics | None = None) -> None:
        self.name = name
        self.enabled = spec.enabled and spec.max_rows > 1
        self.max_wait = spec.max_wait_ms / 1000.0
        self.max_rows = spec.max_rows
        self.metrics = metrics
        self.coming = 0
        self._open: dict[int, _Batch] = {}
        self._expect: dict[int, int] = {}  # requests in the previous batch of each version

    def arrive(self) -> Ticket:
        """Count a request that has started: batches gathering now wait for it (up to ``max_wait_ms``)."""
        self.coming += 1
        return Ticket()

    def leave(self, ticket: Ticket) -> None:
        """The request is done (answered or refused); if it never joined a batch, stop waiting for it."""
        if not ticket.gone:
            self._gone(ticket)

    def _gone(self, ticket: Ticket) -> None:
        ticket.gone = True
        self.coming -= 1
        if self.coming <= 0:
            for batch in list(self._open.values()):
                if self._full(batch):
                    self._due(batch)

    def _full(self, batch: _Batch) -> bool:
        return len(batch.entries) >= self._expect.get(id(batch.model), 1)

    async def predict(
        self,
        model: LoadedModel,
        columns: dict[str, list[Any]],
        rows: int,
        ticket: Ticket,
        limit: int | None = None,
    ) -> tuple[Answer, float]:
        """``model``'s answer for one request's validated ``columns``, and the seconds it waited for it.

        Raises what the model raised on this request's rows (asked alone when the batch failed).
        A request with its own generation ``limit`` (``parameters.max_new_tokens``) is answered
        alone: requests in one batch share one limit.
        """
        if not self.enabled or not batchable(model) or rows >= self.max_rows or limit is not None:
            self.leave(ticket)
            start = time.perf_counter()
            predictions, scores = model.predict(columns) if limit is None else model.predict(columns, limit)
            return (predictions, scores), time.perf_counter() - start
        loop = asyncio.get_running_loop()
        key = id(model)
        batch = self._open.get(key)
        if batch is None or batch.rows + rows > self.max_rows:
            if batch is not None:
                self._due(batch)
                del self._open[key]
            batch = _Batch(model)
            self._open[key] = batch
            batch.timer = loop.call_later(self.max_wait, self._due, batch)
        entry = _Entry(columns, rows, loop.create_future(), time.perf_counter())
        batch.entries.append(entry)
        batch.rows += rows
        if not ticket.gone:
            self._gone(ticket)
        if batch.rows >= self.max_rows or (self.coming <= 0 and self._full(batch)):
            self._due(batch)
        return await entry.future

    def _due(self, batch: _Batch) -> None:
        """Answer ``batch`` on the next turn of the loop: the requests that are ready to run before
        then still join it (it stays open until it runs)."""
        if batch.due:
            return
        batch.due = True
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        asyncio.get_running_loop().call_soon(self._run, batch)

    def _run(self, batch: _Batch) -> None:
        key = id(batch.model)
        if self._open.get(key) is batch:
            del self._open[key]
        self._expect[key] = len(batch.entries)
        entries = [e for e in batch.entries if not e.future.done()]
        if not entries:
            return
        try:
            answers = predict_together(batch.model, [e.columns for e in entries])
        except BaseException as exc:  # never leave a request waiting for an answer that will not come
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            raise
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.batch_requests.labels(self.name).observe(len(entries))
        for entry, answer in zip(entries, answers, strict=True):
            if entry.future.done():  # the request was cancelled meanwhile
                continue
            if isinstance(answer, Exception):
                entry.future.set_exception(answer)
            else:
                entry.future.set_result((answer, now - entry.joined))


__all__ = ["Answer", "Batches", "Ticket", "batchable", "predict_together"]
