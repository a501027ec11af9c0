"""Metrics, each knowing whether higher is better and what it needs (labels or probabilities).

Every metric is written once, over a matrix of row weights ``W`` of shape (B, n): row
``b`` of ``W`` says how many times each of the n rows counts. One row of ones is the
plain metric; B rows of bootstrap counts are B resamples at once, which is how the
paired bootstrap in :mod:`evertrain.evaluate.bootstrap` stays vectorized (no Python
loop over resamples) and exact for metrics that are not means, such as ROC AUC and F1.

Classification outputs are encoded as class indices (0..K-1 in the model's class
order) with an (n, K) probability matrix; binary metrics take index 1 as positive.
Generation outputs hold, per row, the reference response's token count and the model's
summed negative log-likelihood of it (perplexity is the exponent of their ratio of sums),
and the exact match and token F1 of the text it generated (means over rows).

>>> out = Outputs.classification(y=[0, 1, 1, 0], proba=[[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
>>> round(compute("accuracy", out), 3), round(compute("roc_auc", out), 3)
(0.5, 0.75)
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evertrain.exceptions import UsageError

#: Probabilities are clipped this far from 0 and 1 in log loss, so one confident miss
#: costs a large finite amount (about 34.5 nats) instead of infinity.
LOG_LOSS_EPS = 1e-15
#: Equal-width confidence bins of the expected calibration error (the usual choice).
ECE_BINS = 10

TASKS = ("binary", "multiclass", "regression", "generation")


@functools.cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with a single-threaded BLAS.

    The products here are many and small (a weight matrix times a column); a multi-threaded
    BLAS gains nothing on them and, on a busy host, spins: measured on 2 shared cores, one
    thread was 10-40x faster.
    """
    with _threadpools().limit(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class Outputs:
    """What a model said about n rows, beside the truth, encoded for metrics.

    ``y`` and ``pred`` are class indices for classification and floats for regression;
    ``proba`` is (n, K) for classification (None if the model gives no probabilities).
    For generation, ``y`` is each reference response's token count, ``pred`` the model's
    summed negative log-likelihood of it, and ``per_row`` the generated text's scores
    (``exact_match``, ``token_f1``).

    The arrays are not changed once made; ``known`` keeps each metric computed on them
    (see :meth:`Metric.__call__`), so a value asked for again (by the stored metrics, a
    gate, the report) costs nothing, and one computed elsewhere on the same arrays (the
    training worker, a thread scoring the champion) can be handed in with :meth:`remember`.
    """

    task: str
    y: np.ndarray
    pred: np.ndarray
    proba: np.ndarray | None = None
    per_row: dict[str, np.ndarray] | None = None
    known: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def remember(self, values: dict[str, float | None]) -> None:
        """Metrics computed on these very arrays elsewhere, as :func:`compute_many` gives them
        (None where the value is not finite)."""
        for name, value in values.items():
            self.known[get_metric(name).name] = float("nan") if value is None else float(value)

    @classmethod
    def classification(
        cls, y: Sequence[int] | np.ndarray, proba: Any, pred: Sequence[int] | np.ndarray | None = None
    ) -> Outputs:
        p = np.asarray(proba, dtype=float)
        if p.ndim == 1:
            p = np.column_stack([1.0 - p, p])
        labels = np.asarray(pred, dtype=int) if pred is not None else p.argmax(axis=1)
        task = "binary" if p.shape[1] == 2 else "multiclass"
        return cls(task, np.asarray(y, dtype=int), labels, p)

    @classmethod
    def regression(cls, y: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> Outputs:
        return cls("regression", np.asarray(y, dtype=float), np.asarray(pred, dtype=float))

    @classmethod
    def generation(
        cls, tokens: Any, nll: Any, exact_match: Any | None = None, token_f1: Any | None = None
    ) -> Outputs:
        """Generation outputs: per row, the reference's tokens, their summed negative
        log-likelihood, and (when text was generated) its exact match and token F1."""
        per_row = {
            name: np.asarray(values, dtype=float)
            for name, values in (("exact_match", exact_match), ("token_f1", token_f1))
            if values is not None
        }
        return cls("generation", np.asarray(tokens, dtype=float), np.asarray(nll, dtype=float), None, per_row)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def n_classes(self) -> int:
        return 0 if self.proba is None else int(self.proba.shape[1])

    def take(self, rows: np.ndarray) -> Outputs:
        """The outputs of a subset of rows (a boolean mask or indices)."""
        index = np.asarray(rows)
        if index.dtype == bool:
            if index.shape != (self.n,):
                raise IndexError(f"a mask of {index.shape} for {self.n} rows")
            index = np.flatnonzero(index)
        # np.take rather than indexing: several times faster on the (n, K) probabilities.
        return Outputs(
            self.task,
            np.take(self.y, index, axis=0),
            np.take(self.pred, index, axis=0),
            None if self.proba is None else np.take(self.proba, index, axis=0),
            None if self.per_row is None else {k: np.take(v, index, axis=0) for k, v in self.per_row.items()},
        )


WeightedFn = Callable[[Outputs, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(outputs, W)`` gives one value per row of ``W``."""

    name: str
    higher_is_better: bool
    tasks: tuple[str, ...]
    needs_proba: bool
    fn: WeightedFn
    doc: str

    def __call__(self, outputs: Outputs) -> float:
        value = outputs.known.get(self.name)
        if value is None:
            value = outputs.known[self.name] = float(self.resampled(outputs, np.ones((1, outputs.n)))[0])
        return value

    def resampled(self, outputs: Outputs, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of weights (B, n) -> (B,); NaN where it is undefined."""
        if outputs.task not in self.tasks:
            raise UsageError(
                f"metric {self.name!r} is for {', '.join(self.tasks)} models, not {outputs.task}"
            )
        if self.needs_proba and outputs.proba is None:
            raise UsageError(f"metric {self.name!r} needs predicted probabilities; the model gives none")
        with np.errstate(divide="ignore", invalid="ignore"), one_blas_thread():
            return np.asarray(self.fn(outputs, weights), dtype=float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _accuracy(o: Outputs, w: np.ndarray) -> np.ndarray:
    return _ratio(w @ (o.pred == o.y).astype(float), w.sum(axis=1))


def _confusion(o: Outputs, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred_k, true_k = o.pred == k, o.y == k
    tp = w @ (pred_k & true_k).astype(float)
    fp = w @ (pred_k & ~true_k).astype(float)
    fn = w @ (~pred_k & true_k).astype(float)
    return tp, fp, fn


def _per_class(
    o: Outputs, w: np.ndarray, score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Positive class for binary outputs; the unweighted mean over classes (macro) otherwise."""
    if o.task == "binary":
        return score(*_confusion(o, w, 1))
    classes = range(max(o.n_classes, int(max(o.y.max(initial=0), o.pred.max(initial=0))) + 1))
    return np.nanmean(np.stack([score(*_confusion(o, w, k)) for k in classes]), axis=0)


def _precision(o: Outputs, w: np.ndarray) -> np.ndarray:
    return _per_class(o, w, lambda tp, fp, fn: _ratio(tp, tp + fp))


def _recall(o: Outputs, w: np.ndarray) -> np.ndarray:
    return _per_class(o, w, lambda tp, fp, fn: _ratio(tp, tp + fn))


def _f1(o: Outputs, w: np.ndarray) -> np.ndarray:
    return _per_class(o, w, lambda tp, fp, fn: _ratio(2 * tp, 2 * tp + fp + fn))


def _binary_auc(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC for every row of ``w``; tied scores count one half.

    Not ``sklearn.metrics.roc_auc_score``: the paired bootstrap asks for the AUC under
    hundreds of rows of weights, and this sorts the scores once for all of them. Equal to
    scikit-learn's with ``sample_weight`` (tested).
    """
    # Tied scores are summed as one group below, so their order does not matter: the
    # unstable sort is twice as fast as a stable one.
    order = np.argsort(score)
    s, pos = score[order], positive[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ws = w[:, order]
    pos_g = np.add.reduceat(ws * pos, starts, axis=1)
    neg_g = np.add.reduceat(ws * (1.0 - pos), starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    num = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
    return _ratio(num, pos_g.sum(axis=1) * neg_g.sum(axis=1))


def _roc_auc(o: Outputs, w: np.ndarray) -> np.ndarray:
    assert o.proba is not None  # checked by Metric.resampled
    if o.task == "binary":
        return _binary_auc(o.proba[:, 1], o.y == 1, w)
    return np.nanmean(np.stack([_binary_auc(o.proba[:, k], o.y == k, w) for k in range(o.n_classes)]), axis=0)


def _true_class_proba(o: Outputs) -> np.ndarray:
    assert o.proba is not None
    return o.proba[np.arange(o.n), np.clip(o.y, 0, o.n_classes - 1)]


def _log_loss(o: Outputs, w: np.ndarray) -> np.ndarray:
    p = np.clip(_true_class_proba(o), LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return _ratio(w @ -np.log(p), w.sum(axis=1))


def _brier(o: Outputs, w: np.ndarray) -> np.ndarray:
    assert o.proba is not None
    if o.task == "binary":
        sq = (o.proba[:, 1] - (o.y == 1)) ** 2
    else:
        sq = ((o.proba - np.eye(o.n_classes)[o.y]) ** 2).sum(axis=1)
    return _ratio(w @ sq, w.sum(axis=1))


def _ece(o: Outputs, w: np.ndarray) -> np.ndarray:
    """Binary: reliability of the positive-class probability; multiclass: of the top-label confidence."""
    assert o.proba is not None
    if o.task == "binary":
        conf, hit = o.proba[:, 1], (o.y == 1).astype(float)
    else:
        conf, hit = o.proba.max(axis=1), (o.pred == o.y).astype(float)
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    # Column b holds each row's (confidence - hit) if the row falls in bin b: one product
    # gives every bin's weighted gap under every row of weights.
    per_bin = np.zeros((len(conf), ECE_BINS))
    per_bin[np.arange(len(conf)), bins] = conf - hit
    return _ratio(np.abs(w @ per_bin).sum(axis=1), w.sum(axis=1))


def _rmse(o: Outputs, w: np.ndarray) -> np.ndarray:
    return np.sqrt(_ratio(w @ (o.pred - o.y) ** 2, w.sum(axis=1)))


def _mae(o: Outputs, w: np.ndarray) -> np.ndarray:
    return _ratio(w @ np.abs(o.pred - o.y), w.sum(axis=1))


def _r2(o: Outputs, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1)
    mean = _ratio(w @ o.y, total)
    ss_tot = w @ (o.y**2) - total * mean**2
    return 1.0 - _ratio(w @ (o.pred - o.y) ** 2, ss_tot)


def _perplexity(o: Outputs, w: np.ndarray) -> np.ndarray:
    """exp(total negative log-likelihood / total tokens): per token, over the weighted rows."""
    return np.exp(_ratio(w @ o.pred, w @ o.y))


def _row_mean(name: str) -> WeightedFn:
    def mean(o: Outputs, w: np.ndarray) -> np.ndarray:
        values = (o.per_row or {}).get(name)
        if values is None:
            return np.full(w.shape[0], np.nan)  # no text was generated for these rows
        return _ratio(w @ values, w.sum(axis=1))

    return mean


def exact_match_rows(generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """1.0 where the generated text equals the reference once both are normalized, else 0.0.

    Normalized as extractive QA scoring does: lower case, punctuation and the articles
    a, an, the dropped, whitespace collapsed.

    >>> exact_match_rows(["Refund, please.", "ship it"], ["refund please", "shipping"]).tolist()
    [1.0, 0.0]
    """
    return np.array(
        [_normal(g) == _normal(r) for g, r in zip(generated, reference, strict=True)], dtype=float
    )


def token_f1_rows(generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """The F1 of the normalized words the generated text shares with the reference, per row.

    >>> token_f1_rows(["refund my order", ""], ["refund the order", ""]).tolist()
    [0.8, 1.0]
    """
    out = np.empty(len(generated))
    for i, (g, r) in enumerate(zip(generated, reference, strict=True)):
        gw, rw = _normal(g).split(), _normal(r).split()
        if not gw or not rw:
            out[i] = float(gw == rw)
            continue
        common = sum((Counter(gw) & Counter(rw)).values())
        out[i] = 0.0 if common == 0 else 2 * common / (len(gw) + len(rw))
    return out


_PUNCTUATION = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _normal(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", _PUNCTUATION.sub(" ", str(text).lower())).split())


_CLS = ("binary", "multiclass")
_REG = ("regression",)
_GEN = ("generation",)

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", True, _CLS, False, _accuracy, "share of rows whose predicted class is right"),
        Metric("precision", True, _CLS, False, _precision, "of predicted positives, the share right (macro)"),
        Metric("recall", True, _CLS, False, _recall, "of true positives, the share found (macro)"),
        Metric("f1", True, _CLS, False, _f1, "harmonic mean of precision and recall (macro)"),
        Metric("roc_auc", True, _CLS, True, _roc_auc, "ranking quality of the scores (one-vs-rest macro)"),
        Metric("log_loss", False, _CLS, True, _log_loss, "mean negative log-probability of the true class"),
        Metric("brier", False, _CLS, True, _brier, "mean squared error of the probabilities"),
        Metric(
            "ece", False, _CLS, True, _ece, f"expected calibration error over {ECE_BINS} equal-width bins"
        ),
        Metric("rmse", False, _REG, False, _rmse, "root mean squared error"),
        Metric("mae", False, _REG, False, _mae, "mean absolute error"),
        Metric("r2", True, _REG, False, _r2, "coefficient of determination"),
        Metric(
            "perplexity", False, _GEN, False, _perplexity, "exp of the mean negative log-likelihood per token"
        ),
        Metric(
            "exact_match",
            True,
            _GEN,
            False,
            _row_mean("exact_match"),
            "share of answers equal to the reference",
        ),
        Metric(
            "token_f1", True, _GEN, False, _row_mean("token_f1"), "mean word-overlap F1 with the reference"
        ),
    )
}
ALIASES = {"auc": "roc_auc", "calibration_error": "ece", "logloss": "log_loss", "brier_score": "brier"}
DEFAULT_METRICS = {
    "binary": ("accuracy", "roc_auc", "log_loss", "f1", "ece"),
    "multiclass": ("accuracy", "log_loss", "f1"),
    "regression": ("rmse", "mae", "r2"),
    "generation": ("perplexity", "exact_match", "token_f1"),
}


def get_metric(name: str) -> Metric:
    """The metric called ``name`` (or one of its aliases); unknown names list the known ones."""
    key = ALIASES.get(name, name)
    try:
        return METRICS[key]
    except KeyError:
        known = ", ".join(sorted([*METRICS, *ALIASES]))
        raise UsageError(f"unknown metric {name!r}; known: {known}") from None


def compute(name: str, outputs: Outputs) -> float:
    return get_metric(name)(outputs)


def compute_many(names: Sequence[str], outputs: Outputs) -> dict[str, float | None]:
    """Each named metric that applies to these outputs; None where undefined (e.g. one class only)."""
    out: dict[str, float | None] = {}
    for name in dict.fromkeys(names):
        metric = get_metric(name)
        if outputs.task not in metric.tasks or (metric.needs_proba and outputs.proba is None):
            continue
        value = metric(outputs)
        out[metric.name] = value if np.isfinite(value) else None
    return out
