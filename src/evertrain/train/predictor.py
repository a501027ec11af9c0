"""A model version turned into a predictor: loaded from its verified artifact, checked and warmed.

:func:`load_version` reads a version's artifact from the store (hash-checked), rebuilds
the estimator with its safe format, builds the input rules from its training snapshot
(:mod:`evertrain.train.inputs`) and makes one warm-up prediction. Serving loads every
version it routes to this way, the rollout analysis loads the previous champion to score
it again on the rows the new one answered, and the replay scores batches with it; it sits
in ``train``, below all three, so none of them imports another to get a predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from evertrain.evaluate.scoring import model_frame, wants_categories
from evertrain.exceptions import UsageError
from evertrain.spec import ModelSpec
from evertrain.store import Store
from evertrain.store.adapters import load_adapter
from evertrain.store.formats import get_format
from evertrain.store.metadata import snapshots
from evertrain.train.inputs import (
    ANY,
    DEFAULT_RANGE_TOLERANCE,
    NUMERIC,
    InputSchema,
    UnknownCategories,
    frame_columns,
    rule_from_schema,
)


@dataclass(frozen=True)
class LoadOptions:
    """How a version's inputs are checked; the same for every version a replica loads."""

    range_tolerance: float | None = DEFAULT_RANGE_TOLERANCE
    unknown_categories: UnknownCategories = "accept"


class LoadedModel:
    """One version, rebuilt from its verified artifact, with its input rules; ready to predict."""

    def __init__(self, name: str, version: int, estimator: Any, schema: InputSchema, task: str) -> None:
        self.name = name
        self.version = version
        self.version_label = str(version)
        self.estimator = estimator
        self.schema = schema
        self.task = task
        self.wants_frame = hasattr(estimator, "feature_names_in_")
        self.wants_categories = wants_categories(estimator)
        classes = getattr(estimator, "classes_", None)
        self.classes = None if classes is None else np.asarray(classes)
        self.binary = (
            task == "binary"
            and hasattr(estimator, "predict_proba")
            and (self.classes is None or len(self.classes) == 2)
        )
        #: A generator answers with text, up to this many tokens (None: not a generator).
        self.max_new_tokens: int | None = (
            int(estimator.max_new_tokens) if getattr(estimator, "generates", False) else None
        )
        if self.max_new_tokens is not None or (self.classes is not None and self.classes.dtype.kind in "OUS"):
            self.prediction_type = "string"
        else:
            self.prediction_type = "float64"
        self.log_types = {**schema.log_types()}
        self.all_numeric = all(f.type == NUMERIC for f in schema.fields)
        self._columns = list(schema.names)

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, v{self.version})"

    def inputs(self, columns: dict[str, list[Any]]) -> Any:
        """What the estimator takes: a DataFrame when it was fitted on one, else a float matrix.

        All-numeric inputs become one float matrix first: a DataFrame over a single block
        converts back to an array much faster inside the estimator than one built column by
        column, and that conversion is a large share of a small model's time.
        """
        if self.all_numeric:
            matrix = np.array([columns[n] for n in self.schema.names], dtype=np.float64).T
            if self.wants_frame:
                import pandas as pd

                return pd.DataFrame(matrix, columns=self._columns)
            return matrix
        typed = frame_columns(self.schema, columns)
        if self.wants_frame:
            import pandas as pd

            frame = pd.DataFrame(typed, columns=list(self.schema.names))
            if self.wants_categories:
                # LightGBM reads text features as pandas categoricals, as it was trained on them.
                return model_frame(frame, self._columns, categorical_as_category=True)
            return frame
        return np.column_stack([np.asarray(typed[n], dtype=np.float64) for n in self.schema.names])

    def predict(
        self, columns: dict[str, list[Any]], max_new_tokens: int | None = None
    ) -> tuple[list[Any], list[float] | None]:
        """Predictions (JSON-ready) and, for binary classifiers, the positive-class probability.

        A binary classifier is asked once, for probabilities; its prediction is the class with
        the higher one, which saves a second pass through the model. A generator's predictions
        are its answers, of at most ``max_new_tokens`` tokens (its own limit when None).
        """
        X = self.inputs(columns)
        if self.max_new_tokens is not None:
            return _plain(np.asarray(self.estimator.predict(X, max_new_tokens=max_new_tokens))), None
        if self.binary:
            proba = np.asarray(self.estimator.predict_proba(X))
            positive = proba[:, 1] if proba.ndim == 2 else proba
            index = (positive >= 0.5).astype(np.int64)
            preds = self.classes[index] if self.classes is not None else index
            return _plain(preds), _plain(positive.astype(np.float64))
        return _plain(np.asarray(self.estimator.predict(X))), None

    def probabilities(
        self, columns: dict[str, list[Any]], positive: list[float] | None = None
    ) -> tuple[list[Any], list[list[float]]]:
        """The classes, in order, and each instance's probability of each; classifiers only.

        ``positive``, when the binary answer already holds it, spares a second pass.
        """
        if not hasattr(self.estimator, "predict_proba") or self.task == "regression":
            raise UsageError(f"model {self.name!r} v{self.version} gives no class probabilities")
        if positive is not None and self.binary:
            p = np.asarray(positive, dtype=np.float64)
            matrix = np.column_stack([1.0 - p, p])
        else:
            matrix = self.estimator.predict_proba(self.inputs(columns))
            matrix = np.asarray(matrix, dtype=np.float64)
            if matrix.ndim == 1:
                matrix = np.column_stack([1.0 - matrix, matrix])
        classes = self.classes if self.classes is not None else np.arange(matrix.shape[1])
        return _plain(np.asarray(classes)), [_plain(row) for row in matrix]


def _plain(values: np.ndarray) -> list[Any]:
    """JSON-ready values: non-finite floats become null rather than invalid JSON."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return [None if not np.isfinite(v) else float(v) for v in values]
    out: list[Any] = values.tolist()
    return out


def task_of_estimator(estimator: Any) -> str:
    """The task a fitted estimator was trained for, read from the estimator itself.

    LightGBM names it in its objective; a classifier has ``classes_`` (two: binary);
    anything else is taken for a regressor. Used when no spec names the task.
    """
    objective = getattr(estimator, "objective_", None)
    if isinstance(objective, str) and objective:
        head = objective.split()[0]
        if head.startswith("binary"):
            return "binary"
        if head.startswith("multiclass"):
            return "multiclass"
        return "regression"
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        return "binary" if len(classes) == 2 else "multiclass"
    return "regression"


def _is_pipeline(estimator: Any) -> bool:
    return type(estimator).__name__ in ("Pipeline", "ColumnTransformer") or hasattr(estimator, "steps")


def load_version(
    store: Store,
    name: str,
    version: int,
    *,
    spec: ModelSpec | None = None,
    options: LoadOptions | None = None,
) -> LoadedModel:
    """Load version ``version`` of ``name`` from the store, build its input rules and warm it."""
    options = options or LoadOptions()
    mv = store.registry.get_version(name, version)
    data = store.registry.load_artifact(mv)
    own_spec = spec if spec is not None and spec.name == name else None
    if mv.framework == "sklearn" and own_spec is not None and own_spec.trusted_types:
        fmt = get_format(mv.framework, trusted=own_spec.trusted_types)
    else:
        fmt = get_format(mv.framework)
    estimator = fmt.loads(data)
    if mv.framework == "lora":
        # Attached to the replica's one copy of its base model; swapped in place on a hot swap.
        estimator = load_adapter(estimator, store.artifacts)
    if not callable(getattr(estimator, "predict", None)):
        raise UsageError(
            f"model {name!r} v{version}: a {mv.framework} artifact has no predict(); it cannot be served"
        )
    columns = _snapshot_columns(store, [s["id"] for s in mv.snapshots if s["role"] == "train"])
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        features = [str(n) for n in names]
    elif own_spec is not None and own_spec.features:
        features = list(own_spec.features)
    elif columns is not None and own_spec is not None:
        features = [c for c in columns if c != own_spec.target]
    else:
        raise UsageError(
            f"model {name!r} v{version}: cannot tell its inputs (the model has no feature_names_in_, "
            "and no spec lists the features of a training snapshot)"
        )
    fallback = ANY if _is_pipeline(estimator) else NUMERIC
    rules = [
        rule_from_schema(
            f,
            None if columns is None else columns.get(f),
            fallback=fallback,
            range_tolerance=options.range_tolerance,
            unknown_categories=options.unknown_categories,
        )
        for f in features
    ]
    task = own_spec.task if own_spec is not None else task_of_estimator(estimator)
    loaded = LoadedModel(name, version, estimator, InputSchema(rules), task)
    warm(loaded)
    return loaded


def warm(model: LoadedModel) -> None:
    """One prediction on a valid made-up instance, so the first real request pays no first-call costs."""
    example = model.schema.example()
    model.predict({k: [v] for k, v in example.items()})


def _snapshot_columns(store: Store, snapshot_ids: list[str]) -> dict[str, Any] | None:
    if not snapshot_ids:
        return None
    with store.db.read() as conn:
        row = conn.execute(sa.select(snapshots.c.schema).where(snapshots.c.id == snapshot_ids[0])).first()
    if row is None or not isinstance(row.schema, dict):
        return None
    columns = row.schema.get("columns")
    return columns if isinstance(columns, dict) else None
