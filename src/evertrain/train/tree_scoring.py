"""Scoring the holdout with a boosted model while its later trees are still being grown.

A boosted model's output on a row is a sum over its trees, so the holdout can be scored
a chunk of iterations at a time, each chunk as soon as it exists, on a core that the
(single-threaded) training leaves idle. When boosting ends, only the last chunk up to
the iteration that is kept remains to be scored, instead of the whole model: the gates
get the challenger's holdout scores without a scoring pass after the fit.

The result is checked before it is used: the registered model is loaded from its bytes
and predicts a sample of the holdout rows the ordinary way; the summed scores must agree
on every sampled row (up to rounding in the order of the sums, far below anything a
metric can see). A model this cannot sum (random-forest averaging, an output transform
it does not know) or any disagreement means the holdout is scored the ordinary way.

Only the objectives whose output transform is known are summed here: binary and cross
entropy (sigmoid), multiclass (softmax), the plain regressions (identity) and the
log-link regressions poisson, gamma and tweedie (exp).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evertrain._background import yield_to_training

#: Boosting iterations per chunk handed to the scoring thread. Smaller chunks leave less to
#: score when boosting ends; each chunk costs one parse and one pass over the rows.
CHUNK_ITERATIONS = 20
#: Holdout rows the registered model predicts the ordinary way to check the summed scores.
VERIFY_ROWS = 256
#: Largest difference allowed between summed and ordinary scores: the sums differ only in
#: the order of floating-point additions (about 1e-15 on probabilities).
VERIFY_TOLERANCE = 1e-9
_IDENTITY = {"regression", "regression_l2", "l2", "mse", "regression_l1", "l1", "huber", "fair", "quantile"}
_IDENTITY |= {"mape", "mean_absolute_percentage_error"}
_EXP = {"poisson", "gamma", "tweedie"}
_SIGMOID = {"binary", "cross_entropy", "xentropy"}


@dataclass
class _Chunk:
    start: int
    stop: int
    booster: Any
    raw: np.ndarray


def _objective_line(model_text: str) -> str:
    for line in model_text.splitlines():
        if line.startswith("objective="):
            return line[len("objective=") :]
        if line.startswith("Tree="):
            break
    return ""


def transform(raw: np.ndarray, objective: str) -> np.ndarray | None:
    """What LightGBM's ``predict`` returns for these raw scores, or None for an unknown transform.

    ``objective`` is the model file's objective line, e.g. ``binary sigmoid:1``.
    """
    name, *options = objective.split()
    opts = dict(o.split(":", 1) for o in options if ":" in o)
    if name in _SIGMOID:
        return np.asarray(1.0 / (1.0 + np.exp(-float(opts.get("sigmoid", 1.0)) * raw)))
    if name in ("multiclass", "softmax"):
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
    if name in _IDENTITY and "sqrt" not in options:
        return raw
    if name in _EXP:
        return np.asarray(np.exp(raw))
    return None


class TreeScorer:
    """Sums a training booster's trees over fixed rows, chunk by chunk, in a thread of its own.

    The trainer calls :meth:`offer` after each boosting iteration (cheap until a chunk is
    due), then :meth:`submit` and :meth:`finish` with the number of iterations it keeps;
    :meth:`outputs` then gives the kept model's predictions on the rows. ``lookback`` is
    how far back the kept iteration may lie behind the last one grown (the early-stopping
    patience): older chunks are folded into one running sum to bound memory.
    """

    def __init__(self, X: pd.DataFrame, *, lookback: int = 0, chunk: int = CHUNK_ITERATIONS) -> None:
        self.X = X
        self.chunk = max(1, chunk)
        self.lookback = max(0, lookback)
        self.submitted = 0
        self.error: str | None = None
        self._queue: queue.Queue[tuple[int, int, str] | None] = queue.Queue()
        self._chunks: deque[_Chunk] = deque()
        self._folded_until = 0
        self._folded: np.ndarray | None = None
        self._objective = ""
        self._total: int | None = None
        self._result: np.ndarray | None = None
        self._thread = threading.Thread(target=self._work, name="evertrain-holdout-trees", daemon=True)
        self._thread.start()

    # -- the training side -----------------------------------------------------------------

    def offer(self, booster: Any) -> None:
        """Queue the newest trees if a chunk's worth has been grown since the last one."""
        if self.error is None and booster.current_iteration() - self.submitted >= self.chunk:
            self.submit(booster, booster.current_iteration())

    def submit(self, booster: Any, stop: int) -> None:
        """Queue the trees of iterations ``[submitted, stop)``."""
        if self.error is not None or stop <= self.submitted:
            return
        text = booster.model_to_string(start_iteration=self.submitted, num_iteration=stop - self.submitted)
        if not self._objective:
            self._objective = _objective_line(text)  # every chunk's header names the objective
        self._queue.put((self.submitted, stop, text))
        self.submitted = stop

    def finish(self, total: int) -> None:
        """No more trees: the thread sums iterations ``[0, total)`` while the caller goes on."""
        if self._total is None:
            self._total = total
            self._queue.put(None)

    def close(self) -> None:
        """Stop the thread (after a failed training); pending chunks are dropped."""
        self.error = self.error or "closed"
        self._queue.put(None)

    # -- the scoring thread ----------------------------------------------------------------

    def _work(self) -> None:
        import lightgbm

        yield_to_training()
        while (item := self._queue.get()) is not None:
            start, stop, text = item
            if self.error is not None or (self._total is not None and start >= self._total):
                continue  # failed already, or trees grown past the kept ones
            try:
                booster = lightgbm.Booster(model_str=text)
                if "average_output" in text.split("Tree=", 1)[0]:
                    raise ValueError("a random-forest model averages its trees instead of summing them")
                raw = np.asarray(booster.predict(self.X, raw_score=True, num_threads=1))
            except Exception as exc:  # the scores are then computed the ordinary way
                self.error = f"{type(exc).__name__}: {exc}"
                continue
            self._chunks.append(_Chunk(start, stop, booster, raw))
            while self._chunks and self._chunks[0].stop <= self.submitted - self.lookback - self.chunk:
                old = self._chunks.popleft()
                self._folded = old.raw if self._folded is None else self._folded + old.raw
                self._folded_until = old.stop
        if self.error is None and self._total is not None:
            try:
                self._result = self._sum(self._total)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"

    def _sum(self, total: int) -> np.ndarray | None:
        if total < self._folded_until or total > self.submitted:
            return None
        acc = self._folded
        for chunk in self._chunks:
            if chunk.start >= total:
                break
            part = chunk.raw
            if chunk.stop > total:
                part = np.asarray(
                    chunk.booster.predict(
                        self.X, raw_score=True, num_iteration=total - chunk.start, num_threads=1
                    )
                )
            acc = part if acc is None else acc + part
        return acc

    def outputs(self, model: Any, total: int) -> tuple[np.ndarray | None, str]:
        """``model``'s ``predict`` on the rows from the summed trees of iterations ``[0, total)``.

        ``model`` is the registered :class:`~evertrain.store.formats.BoosterModel`; it
        predicts a sample of the rows itself, and the sums are used only if they agree.
        Returns the predictions (None when the rows must be scored the ordinary way) and a
        line saying which happened.
        """
        self.finish(total)
        self._thread.join()
        raw = self._result if self._total == total else None
        if raw is None:
            return None, f"holdout scored after training ({self.error or 'trees not all summed'})"
        out = transform(raw, self._objective)
        if out is None:
            return None, f"holdout scored after training (objective {self._objective!r} not summed here)"
        rows = np.unique(np.linspace(0, len(self.X) - 1, min(len(self.X), VERIFY_ROWS)).astype(int))
        expected = np.asarray(model.booster_.predict(self.X.iloc[rows], num_threads=1))
        gap = float(np.max(np.abs(expected - out[rows]))) if len(rows) else 0.0
        if not gap <= VERIFY_TOLERANCE:
            return None, f"holdout scored after training (summed trees differed by {gap:.3g})"
        return out, f"holdout scored during training, {len(rows)} rows checked (largest difference {gap:.1e})"
