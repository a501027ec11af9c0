"""Loading registered models and scoring them into :class:`~evertrain.evaluate.metrics.Outputs`.

Shared by the training worker (valid and holdout metrics of a fresh model) and by
``evaluate_version`` (challenger and champion on the same rows), so both measure the
same way. Models are only ever rebuilt from bytes whose hash the artifact store has
checked, through the safe formats of :mod:`evertrain.store.formats`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from evertrain.evaluate.metrics import Outputs
from evertrain.exceptions import DataValidationError
from evertrain.store.formats import BoosterModel, get_format
from evertrain.store.registry import ModelVersion


@contextlib.contextmanager
def importable(folder: str | None) -> Iterator[None]:
    """The project folder on ``sys.path`` for the duration, so its own modules import."""
    if not folder or folder in sys.path:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
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
    return get_format(version.framework, **options).loads(store.registry.load_artifact(version))


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


def predict_outputs(
    model: Any,
    frame: pd.DataFrame,
    features: Sequence[str],
    task: str,
    target: str,
    classes: Sequence[Any] | None = None,
) -> tuple[Outputs, list[Any] | None]:
    """Score ``frame`` and pair it with its labels; classification probabilities in ``classes`` order.

    Returns the outputs and the class order used (the model's own when ``classes`` is None),
    so a champion can be aligned to the challenger's classes.
    """
    X = model_frame(frame, features, categorical_as_category=wants_categories(model))
    y_raw = frame[target].to_numpy()
    if task == "regression":
        return Outputs.regression(
            np.asarray(y_raw, dtype=float), np.asarray(model.predict(X), dtype=float)
        ), None
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X), dtype=float)
        own = model_classes(model, proba.shape[1])
        order = list(classes) if classes is not None else own
        aligned = np.zeros((len(frame), len(order)))
        position = {c: i for i, c in enumerate(own)}
        for j, c in enumerate(order):
            if c in position:
                aligned[:, j] = proba[:, position[c]]
        y = encode_labels(y_raw, order)
        return Outputs.classification(y, aligned), order
    predicted = np.asarray(model.predict(X))
    order = (
        list(classes)
        if classes is not None
        else sorted(set(np.asarray(y_raw).tolist()) | set(predicted.tolist()))
    )
    y = encode_labels(y_raw, order)
    pred = encode_labels(predicted, order, what="predicted")
    out = Outputs("binary" if len(order) <= 2 else "multiclass", y, pred, None)
    return out, order
