"""Scoring the holdout with a boosted model while its later trees are still being grown.

A boosted model's output on a row is a sum over its trees, so the holdout can be scored
a chunk of iterations at a time, each chunk as soon as it exists, on a core that the
(single-threaded) training leaves idle. When boosting ends, only the last chunk up to
the iteration that is kept remains to be scored, instead of the whole model: the gates
get the challenger's holdout scores without a scoring pass after the fit.

The rows are turned once into the numeric matrix LightGBM predicts on (text columns as
codes of the training's categories), so that each chunk's pass is one call into LightGBM,
which releases the GIL: converting a data frame on every pass held it, and the training
loop in the same process waited for it after each boosting iteration. When boosting ends,
the thread that trained takes over the chunks still queued and sums them at its own
priority instead of waiting for the scoring thread, which runs at a lower one.

The result is checked before it is used, on a sample of the rows that holds every
category of every text column, a missing value of every column that has one, and rows
spread over the holdout. The first chunk's trees predict the sample the ordinary way
(from the data frame) in the scoring thread, during the fit: that checks the numeric
matrix and the output transform. When boosting ends, the registered model (loaded from
its bytes) predicts the sample from the matrix, or from the data frame where there is
none: that checks the sums. Where the caller has the model's own output on the first
rows (an in-process latency probe predicts them anyway), those rows are checked too.
The summed scores must agree on every row checked (up to rounding in the order of the
sums, far below anything a metric can see). A model this cannot sum (random-forest
averaging, an output transform it does not know) or any disagreement means the holdout
is scored the ordinary way.

Only the objectives whose output transform is known are summed here: binary and cross
entropy (sigmoid), multiclass (softmax), the plain regressions (identity) and the
log-link regressions poisson, gamma and tweedie (exp).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evertrain._background import yield_to_training

#: Boosting iterations per chunk handed to the scoring thread. Smaller chunks leave less to
#: score when boosting ends; each chunk costs one parse and one pass over the rows.
CHUNK_ITERATIONS = 20
#: Iterations per chunk within a chunk of the last iteration boosting may reach: what is left
#: to score when boosting runs its course (no early stop) is then a few trees, not a chunk.
TAIL_ITERATIONS = 5
#: Rows spread over the holdout in the sample that checks the summed scores (beside a row
#: of each category and of each column's missing values), and the most the sample holds.
VERIFY_SPREAD = 32
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


def numeric_rows(X: pd.DataFrame, categories: list[list[Any]] | None) -> np.ndarray | None:
    """``X`` as the float matrix LightGBM predicts on, or None where this cannot tell how.

    LightGBM turns a data frame's categorical columns into the codes of the categories it
    was trained with (``categories``: the booster's ``pandas_categorical``, one list per
    categorical column in column order), unknown ones missing, and every column into
    floats. Doing it once here spares each prediction that work; the values are the ones
    LightGBM would compute (floats hold every code and every float32 or float64 exactly),
    and :meth:`TreeScorer.outputs` checks the result against an ordinary prediction anyway.
    """
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    if len(categorical) != len(categories or []):
        return None
    kept = dict(zip(categorical, categories or [], strict=True))
    out = np.empty((len(X), X.shape[1]), dtype=np.float64)
    for i, column in enumerate(X.columns):
        values = X[column]
        if column in kept:
            codes = values.cat.set_categories(kept[column]).cat.codes.to_numpy()
            out[:, i] = np.where(codes < 0, np.nan, codes)
        elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            out[:, i] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            return None
    return out


def check_rows(X: pd.DataFrame) -> np.ndarray:
    """Positions of the rows that check summed scores: the first row of every category of
    every categorical column (a missing one included), the first row where each other
    column is missing, and :data:`VERIFY_SPREAD` rows spread over ``X``; at most
    :data:`VERIFY_ROWS`."""
    n = len(X)
    picks = [np.linspace(0, n - 1, min(n, VERIFY_SPREAD)).astype(np.int64)]
    for column in X.columns:
        values = X[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            picks.append(np.unique(values.cat.codes.to_numpy(), return_index=True)[1])
        else:
            picks.append(np.flatnonzero(values.isna().to_numpy())[:1])
    return np.unique(np.concatenate(picks))[:VERIFY_ROWS]


class TreeScorer:
    """Sums a training booster's trees over fixed rows, chunk by chunk, in a thread of its own.

    The trainer calls :meth:`offer` after each boosting iteration (cheap until a chunk is
    due), then :meth:`submit` and :meth:`finish` with the number of iterations it keeps;
    :meth:`outputs` then gives the kept model's predictions on the rows. ``lookback`` is
    how far back the kept iteration may lie behind the last one grown (the early-stopping
    patience): older chunks are folded into one running sum to bound memory.
    """

    def __init__(
        self,
        X: pd.DataFrame | Callable[[], pd.DataFrame],
        *,
        lookback: int = 0,
        chunk: int = CHUNK_ITERATIONS,
    ) -> None:
        #: How to make the rows (given as a recipe, they are made by the scoring thread with its
        #: first chunk, the training's own frames made by then, or by whoever asks first).
        self._make_rows = X if callable(X) else lambda: X
        self._X: pd.DataFrame | None = None
        self._X_lock = threading.Lock()
        self.chunk = max(1, chunk)
        self.lookback = max(0, lookback)
        self.submitted = 0
        self.error: str | None = None
        #: Trees to score: (first iteration, iteration after the last, model text of those).
        self._queue: queue.Queue[tuple[int, int, str] | None] = queue.Queue()
        #: Model texts of the chunks not folded yet, by first iteration: the one the kept
        #: iteration falls within is scored again up to it.
        self._texts: dict[int, tuple[int, str]] = {}
        #: Scored chunks not folded yet, by first iteration; both threads add to it.
        self._chunks: dict[int, _Chunk] = {}
        self._lock = threading.Lock()
        self._folded_until = 0
        self._folded: np.ndarray | None = None
        self._objective = ""
        self._total: int | None = None
        #: ``X`` as LightGBM's numeric matrix (built with the first chunk), or ``X`` itself.
        self._rows: np.ndarray | pd.DataFrame | None = None
        #: The rows that check the sums (see the module doc), chosen with the first chunk.
        self._sample: np.ndarray | None = None
        #: Called by the scoring thread with the kept model's predictions on the rows as soon
        #: as its last chunk is summed, and with what :meth:`finish` was told they are of;
        #: before the sums are checked, so they are provisional (see :meth:`_hand_over`).
        self.on_summed: Callable[[np.ndarray, Any], None] | None = None
        self._of: Any = None
        self._handed = False
        self._thread = threading.Thread(target=self._work, name="evertrain-holdout-trees", daemon=True)
        self._thread.start()

    @property
    def X(self) -> pd.DataFrame:
        """The rows scored (see the constructor); what making them raised is raised here."""
        with self._X_lock:
            if self._X is None:
                self._X = self._make_rows()
            return self._X

    # -- the training side -----------------------------------------------------------------

    def offer(self, booster: Any, last: int | None = None) -> None:
        """Queue the newest trees if a chunk's worth has been grown since the last one.

        ``last``: the last iteration boosting may reach (its round limit); within a chunk of it
        the chunks are :data:`TAIL_ITERATIONS` long.
        """
        current = booster.current_iteration()
        chunk = self.chunk
        if last is not None and last - current < chunk:
            chunk = min(chunk, TAIL_ITERATIONS)
        if self.error is None and current - self.submitted >= chunk:
            self.submit(booster, current)

    def submit(self, booster: Any, stop: int) -> None:
        """Queue the trees of iterations ``[submitted, stop)``."""
        if self.error is not None or stop <= self.submitted or self._total is not None:
            return
        text = booster.model_to_string(start_iteration=self.submitted, num_iteration=stop - self.submitted)
        if not self._objective:
            self._objective = _objective_line(text)  # every chunk's header names the objective
        with self._lock:
            self._texts[self.submitted] = (stop, text)
        self._queue.put((self.submitted, stop, text))
        self.submitted = stop

    def finish(self, total: int, of: Any = None) -> None:
        """No more trees: the thread sums iterations ``[0, total)`` while the caller goes on.

        A chunk that ends past ``total`` is scored again up to it (its trees after ``total``
        are not the model's); chunks starting at or after it are not scored. ``of``: the
        model the sums are the predictions of, for :attr:`on_summed`.
        """
        if self._total is not None:
            return
        self._of = of
        self._total = total
        with self._lock:
            cut = next(((a, b, t) for a, (b, t) in self._texts.items() if a < total < b), None)
        if cut is not None:
            self._queue.put((cut[0], total, cut[2]))
        self._queue.put(None)

    def close(self, reason: str = "closed") -> None:
        """Stop the thread (after a failed training, or when the model is not the trees it was
        offered); pending chunks are dropped, and the holdout is scored the ordinary way."""
        self.error = self.error or reason
        self._queue.put(None)

    # -- scoring (the scoring thread, and the training thread once boosting has ended) -----

    def _work(self) -> None:
        yield_to_training()
        while (item := self._queue.get()) is not None:
            self._score(*item)
        self._hand_over()

    def _hand_over(self) -> None:
        """Give :attr:`on_summed` the summed predictions, once: by the scoring thread when its
        last chunk is scored, or by the training thread when that took the last chunks over
        (:meth:`outputs`). Nothing when the scorer was closed or a chunk is missing; what the
        callback raises only loses the hand-over."""
        callback, total = self.on_summed, self._total
        with self._lock:
            if callback is None or total is None or self.error is not None or self._handed:
                return
            raw = self._sum(total)
            self._handed = raw is not None
        out = None if raw is None else transform(raw, self._objective)
        if out is not None:
            with contextlib.suppress(Exception):
                callback(out, self._of)

    def _score(self, start: int, stop: int, text: str) -> None:
        """Score iterations ``[start, stop)`` of the trees in ``text`` (a chunk, or the first
        part of one) and fold what the kept iteration can no longer fall within."""
        import lightgbm

        total = self._total
        if self.error is not None or (total is not None and (start >= total or stop > total)):
            return  # failed already, or trees past the kept ones (the cut part is queued)
        try:
            booster = lightgbm.Booster(model_str=text)
            if "average_output" in text.split("Tree=", 1)[0]:
                raise ValueError("a random-forest model averages its trees instead of summing them")
            rows, built = self._matrix(booster)
            raw = np.asarray(booster.predict(rows, raw_score=True, num_iteration=stop - start, num_threads=1))
            if built and isinstance(rows, np.ndarray):
                self._check_matrix(booster, raw, stop - start)
        except Exception as exc:  # the scores are then computed the ordinary way
            self.error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            if self._total is not None and stop > self._total:
                return  # scored while boosting ended: its cut part takes its place
            self._chunks[start] = _Chunk(start, stop, raw)
            # Fold, in order, the chunks that the kept iteration can no longer fall within.
            while (
                first := self._chunks.get(self._folded_until)
            ) is not None and first.stop <= self.submitted - self.lookback - self.chunk:
                del self._chunks[first.start]
                self._texts.pop(first.start, None)
                self._folded = first.raw if self._folded is None else self._folded + first.raw
                self._folded_until = first.stop

    def _matrix(self, booster: Any) -> tuple[np.ndarray | pd.DataFrame, bool]:
        """The rows as every chunk is scored on: built once, from the first chunk's categories;
        and whether this call built them."""
        with self._lock:
            if self._rows is not None:
                return self._rows, False
            self._sample = check_rows(self.X)
            matrix = numeric_rows(self.X, getattr(booster, "pandas_categorical", None))
            self._rows = self.X if matrix is None else matrix
            return self._rows, True

    def _check_matrix(self, booster: Any, raw: np.ndarray, iterations: int) -> None:
        """Raise unless the first chunk's scores from the numeric matrix are its ordinary
        predictions (from the data frame) on the sample."""
        assert self._sample is not None
        rows = self.X.iloc[self._sample]
        expected = np.asarray(booster.predict(rows, num_iteration=iterations, num_threads=1))
        got = transform(raw[self._sample], self._objective)
        if got is None:
            return  # not summed anyway (see outputs)
        gap = float(np.max(np.abs(expected - got))) if len(expected) else 0.0
        if not gap <= VERIFY_TOLERANCE:
            raise ValueError(f"the numeric rows predicted {gap:.3g} away from the data frame")

    def _drain(self) -> None:
        """Score here what is still queued, then wait for the scoring thread's last chunk."""
        taken: list[tuple[int, int, str]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break  # the thread has taken everything, its stop included
            if item is None:
                self._queue.put(None)  # left for the thread, which stops after its current chunk
                break
            taken.append(item)
        for item in taken:
            self._score(*item)
        self._thread.join()

    def _sum(self, total: int) -> np.ndarray | None:
        """The raw scores of iterations ``[0, total)``, summed in the order of the iterations."""
        if total < self._folded_until or total > self.submitted:
            return None
        acc = self._folded
        at = self._folded_until
        while at < total:
            chunk = self._chunks.get(at)
            if chunk is None:
                return None  # a chunk was not scored
            acc = chunk.raw if acc is None else acc + chunk.raw
            at = chunk.stop
        return acc if at == total else None

    def outputs(
        self, model: Any, total: int, checked: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, str]:
        """``model``'s ``predict`` on the rows from the summed trees of iterations ``[0, total)``.

        ``model`` is the registered :class:`~evertrain.store.formats.BoosterModel`; it
        predicts a sample of the rows itself, and the sums are used only if they agree.
        ``checked``: its own output (:meth:`~evertrain.store.formats.BoosterModel.raw`) on
        the first rows when the caller has it, which then serve as the sample.
        Returns the predictions (None when the rows must be scored the ordinary way) and a
        line saying which happened. Chunks still queued are scored in the calling thread:
        the training has ended, and the caller waits for nothing else.
        """
        self.finish(total)
        self._drain()
        self._hand_over()
        raw = self._sum(total) if self.error is None and self._total == total else None
        if raw is None:
            return None, f"holdout scored after training ({self.error or 'trees not all summed'})"
        out = transform(raw, self._objective)
        if out is None:
            return None, f"holdout scored after training (objective {self._objective!r} not summed here)"
        sample = self._sample if self._sample is not None else check_rows(self.X)
        source = self._rows if isinstance(self._rows, np.ndarray) else self.X.iloc
        checks = [(sample, np.asarray(model.booster_.predict(source[sample], num_threads=1)))]
        if checked is not None and 0 < len(checked) <= len(self.X):
            checks.append((np.arange(len(checked)), np.asarray(checked)))
        rows = sum(len(r) for r, _ in checks)
        gap = max((float(np.max(np.abs(e - out[r]))) for r, e in checks if len(r)), default=0.0)
        if not gap <= VERIFY_TOLERANCE:
            return None, f"holdout scored after training (summed trees differed by {gap:.3g})"
        return out, f"holdout scored during training, {rows} rows checked (largest difference {gap:.1e})"
