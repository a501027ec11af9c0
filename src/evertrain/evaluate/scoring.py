"""Loading registered models and scoring them into :class:`~evertrain.evaluate.metrics.Outputs`.

Shared by the training worker (valid and holdout metrics of a fresh model) and by
``evaluate_version`` (challenger and champion on the same rows), so both measure the
same way. Models are only ever rebuilt from bytes whose hash the artifact store has
checked, through the safe formats of :mod:`evertrain.store.formats`.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from evertrain.evaluate.metrics import Outputs
from evertrain.exceptions import DataValidationError
from evertrain.store.adapters import AdapterModel, GeneratorModel, load_adapter
from evertrain.store.formats import BoosterModel, get_format

if TYPE_CHECKING:
    from evertrain.store.registry import ModelVersion

#: Timed predictions per latency measurement; the median resists slow outliers.
LATENCY_REPEATS = 3
#: Latency is measured on at most this many rows per call (ms per row in batches this size:
#: large enough that the fixed cost of a call is a few percent of it, small enough that
#: measuring costs little beside a training).
LATENCY_MAX_ROWS = 256


#: Name prefix of the per-row scores of generation outputs in :meth:`Scored.arrays`.
ROW_PREFIX = "row."


@dataclass(frozen=True)
class Scored:
    """A model's outputs on some rows, the class order they use, and its prediction latency.

    The training worker scores the holdout with the very bytes that get registered; handing
    that to ``evaluate_version`` spares scoring the challenger a second time.
    """

    outputs: Outputs
    classes: list[Any] | None = None
    ms_per_row: float | None = None
    #: Gives ``ms_per_row`` when the training worker was still measuring it as it handed the
    #: scores over (see :func:`evertrain.train.worker.execute_job`); waits for the worker.
    later: Callable[[], float | None] | None = field(default=None, repr=False, compare=False)

    def latency(self) -> float | None:
        """Milliseconds per row of the model's predictions (waits for a measurement under way)."""
        return self.ms_per_row if self.later is None else self.later()

    def arrays(self) -> bytes:
        """The outputs as plain arrays, loaded without pickle: ``.npy`` records one after the
        other, the first naming the rest. (An ``.npz`` is a zip file: writing and reading one
        cost 2.6-4.7 ms for a 30,000-row holdout, between a training and its judging; these,
        1.6-2.6 ms.)"""
        o = self.outputs
        arrays: dict[str, Any] = {"task": np.array(o.task), "y": o.y, "pred": o.pred}
        if o.proba is not None:
            arrays["proba"] = o.proba
        for name, values in (o.per_row or {}).items():
            arrays[ROW_PREFIX + name] = values
        sink = io.BytesIO()
        for values in (np.array(list(arrays)), *arrays.values()):
            np.save(sink, np.asarray(values), allow_pickle=False)
        return sink.getvalue()

    @classmethod
    def from_arrays(
        cls,
        data: bytes,
        classes: list[Any] | None,
        ms_per_row: float | None,
        later: Callable[[], float | None] | None = None,
    ) -> Scored:
        source = io.BytesIO(data)
        z = {str(name): np.load(source, allow_pickle=False) for name in np.load(source, allow_pickle=False)}
        per_row = {k[len(ROW_PREFIX) :]: v for k, v in z.items() if k.startswith(ROW_PREFIX)}
        outputs = Outputs(str(z["task"]), z["y"], z["pred"], z.get("proba"), per_row or None)
        return cls(outputs, classes, ms_per_row, later)


def timed_by_its_pass(model: Any) -> bool:
    """Whether a model's latency is read off its one scoring pass instead of timed apart.

    A language model's scoring pass is forward passes in batches, as serving runs them, and
    costs a good part of a small fine-tuning: timing :data:`LATENCY_REPEATS` more passes
    would double or triple what judging it costs. A table model's pass is cheap next to
    its training, and the median of repeats is steadier.
    """
    return isinstance(model, AdapterModel | GeneratorModel)


def pass_latency(seconds: float, rows: int) -> float | None:
    """Milliseconds per row of a scoring pass over ``rows`` rows that took ``seconds``."""
    return seconds * 1000.0 / rows if rows else None


def measure_latency(
    model: Any, X: pd.DataFrame, timer: Callable[[], float] = time.perf_counter
) -> float | None:
    """Median milliseconds per row of ``model.predict`` on up to :data:`LATENCY_MAX_ROWS` rows."""
    times, _ = timed_predictions(model.predict, X, timer)
    return median_latency(times)


def median_latency(times: list[float]) -> float | None:
    """The latency of a model from its timed calls (milliseconds per row each)."""
    return float(statistics.median(times)) if times else None


def timed_predictions(
    predict: Callable[[pd.DataFrame], Any],
    X: pd.DataFrame,
    timer: Callable[[], float] = time.perf_counter,
    repeats: int = LATENCY_REPEATS,
) -> tuple[list[float], Any]:
    """Milliseconds per row of each of ``repeats`` calls of ``predict`` on the first
    :data:`LATENCY_MAX_ROWS` rows of ``X`` (none without rows), and what the last call
    answered (which a caller may use: the training worker checks the holdout scores it
    summed against it)."""
    rows = X.iloc[:LATENCY_MAX_ROWS]
    times: list[float] = []
    answer = None
    for _ in range(repeats if len(rows) else 0):
        started = timer()
        answer = predict(rows)
        times.append((timer() - started) * 1000.0 / len(rows))
    return times, answer


_PATH_LOCK = threading.Lock()
_PATH_USERS: dict[str, int] = {}


@contextlib.contextmanager
def importable(folder: str | None) -> Iterator[None]:
    """The project folder on ``sys.path`` for the duration, so its own modules import.

    Counted per folder, so that threads of one process (a training and the champion's
    scoring beside it) can each ask for it without one removing it under the other; a
    folder that was on the path before stays there.
    """
    if not folder:
        yield
        return
    with _PATH_LOCK:
        users = _PATH_USERS.get(folder, 0)
        if users == 0 and folder in sys.path:
            users = 1  # on the path before anyone here asked: never removed by this helper
        elif users == 0:
            sys.path.insert(0, folder)
        _PATH_USERS[folder] = users + 1
    try:
        yield
    finally:
        with _PATH_LOCK:
            _PATH_USERS[folder] -= 1
            if _PATH_USERS[folder] == 0:
                del _PATH_USERS[folder]
                with contextlib.suppress(ValueError):
                    sys.path.remove(folder)


def model_frame(
    frame: pd.DataFrame, features: Sequence[str], *, categorical_as_category: bool = False
) -> pd.DataFrame:
    """The feature columns a model is fed; text columns become pandas categoricals when asked.

    LightGBM reads categoricals natively and remaps their categories to the ones it was
    trained with (kept in the model file), so scoring needs only the dtype, not the codes.
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise DataValidationError(
            f"feature(s) {', '.join(map(repr, missing))} are not columns of the rows to score"
        )
    X = frame[list(features)]
    if categorical_as_category:
        text = [
            c
            for c in X.columns
            if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
            and not isinstance(X[c].dtype, pd.CategoricalDtype)
        ]
        if text:
            X = X.assign(**{c: X[c].astype("category") for c in text})
    return X


def wants_categories(model: Any) -> bool:
    """Whether a model takes text features as pandas categoricals (LightGBM) rather than raw values."""
    return isinstance(model, BoosterModel) or type(model).__module__.startswith("lightgbm")


def load_model(store: Any, version: ModelVersion, trusted: Sequence[str] = ()) -> Any:
    """The model object of a registered version, from hash-checked bytes."""
    options = {"trusted": list(trusted)} if version.framework == "sklearn" and trusted else {}
    model = get_format(version.framework, **options).loads(store.registry.load_artifact(version))
    if version.framework == "lora":
        # An adapter predicts once attached to its base model (loaded once per process).
        return load_adapter(model, store.artifacts)
    return model


def encode_labels(values: Any, classes: Sequence[Any], *, what: str = "label") -> np.ndarray:
    """Class indices of ``values`` in ``classes`` order; an unknown value is an error naming it."""
    y = np.asarray(values)
    if y.dtype == bool:
        y = y.astype(int)
    index = pd.Index(list(classes))
    codes = np.asarray(index.get_indexer(y))
    if (codes < 0).any():
        unknown = sorted({str(v) for v in y[codes < 0]})[:5]
        raise DataValidationError(
            f"{what} value(s) {', '.join(unknown)} are not among the model's classes "
            f"({', '.join(map(str, classes))})"
        )
    return codes


def model_classes(model: Any, n_columns: int) -> list[Any]:
    classes = getattr(model, "classes_", None)
    if classes is None:
        return list(range(n_columns))
    return list(np.asarray(classes).tolist())


def model_features(model: Any, features: Sequence[str]) -> list[str]:
    """The columns ``model`` reads: its own ``feature_names_in_`` (in its order) when it has
    them, else ``features``. A version registered by hand may take fewer columns than the
    project's window holds, and a champion so made is still scored beside its challengers.
    """
    names = getattr(model, "feature_names_in_", None)
    return list(features) if names is None else [str(n) for n in names]


def predict_outputs(
    model: Any,
    frame: pd.DataFrame,
    features: Sequence[str],
    task: str,
    target: str,
    classes: Sequence[Any] | None = None,
    predicted: np.ndarray | None = None,
) -> tuple[Outputs, list[Any] | None]:
    """Score ``frame`` and pair it with its labels; classification probabilities in ``classes`` order.

    Returns the outputs and the class order used (the model's own when ``classes`` is None),
    so a champion can be aligned to the challenger's classes. ``predicted``, when given, is
    what the model's ``predict_proba`` (``predict`` for regression) returns on ``frame``,
    computed ahead (the training worker sums a booster's trees while it trains).
    """

    def call(method: str) -> np.ndarray:
        if predicted is not None:
            return np.asarray(predicted)
        X = model_frame(frame, model_features(model, features), categorical_as_category=cats)
        return np.asarray(getattr(model, method)(X))

    if task == "generation":
        return generation_outputs(model, frame, features, target), None
    cats = wants_categories(model)
    y_raw = frame[target].to_numpy()
    if task == "regression":
        return Outputs.regression(
            np.asarray(y_raw, dtype=float), np.asarray(call("predict"), dtype=float)
        ), None
    if hasattr(model, "predict_proba"):
        proba = np.asarray(call("predict_proba"), dtype=float)
        own = model_classes(model, proba.shape[1])
        order = list(classes) if classes is not None else own
        aligned = np.zeros((len(frame), len(order)))
        position = {c: i for i, c in enumerate(own)}
        for j, c in enumerate(order):
            if c in position:
                aligned[:, j] = proba[:, position[c]]
        y = encode_labels(y_raw, order)
        return Outputs.classification(y, aligned), order
    labels = call("predict")
    order = (
        list(classes)
        if classes is not None
        else sorted(set(np.asarray(y_raw).tolist()) | set(labels.tolist()))
    )
    y = encode_labels(y_raw, order)
    pred = encode_labels(labels, order, what="predicted")
    out = Outputs("binary" if len(order) <= 2 else "multiclass", y, pred, None)
    return out, order


def generation_outputs(model: Any, frame: pd.DataFrame, features: Sequence[str], target: str) -> Outputs:
    """A generator's outputs on ``frame``: the likelihood of each reference response (for
    perplexity), and the exact match and token F1 of the answer it generates."""
    from evertrain.evaluate.metrics import exact_match_rows, token_f1_rows

    if not hasattr(model, "likelihood"):
        raise DataValidationError(
            f"a {type(model).__name__} does not generate text: it cannot score task generation"
        )
    X = model_frame(frame, features)
    references = ["" if pd.isna(r) else str(r).strip() for r in frame[target]]
    nll, tokens = model.likelihood(X, references)
    generated = [str(g) for g in model.predict(X)]
    return Outputs.generation(
        tokens, nll, exact_match_rows(generated, references), token_f1_rows(generated, references)
    )


def score(
    model: Any,
    frame: pd.DataFrame,
    features: Sequence[str],
    task: str,
    target: str,
    classes: Sequence[Any] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> Scored:
    """``predict_outputs`` plus the model's prediction latency on these rows."""
    started = timer()
    outputs, order = predict_outputs(model, frame, features, task, target, classes)
    if timed_by_its_pass(model):
        return Scored(outputs, order, pass_latency(timer() - started, len(frame)))
    X = model_frame(frame, model_features(model, features), categorical_as_category=wants_categories(model))
    return Scored(outputs, order, measure_latency(model, X, timer))
