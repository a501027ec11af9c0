"""Whether a model someone trained elsewhere can be served by a project, checked before it is registered.

``evertrain register`` loads the file with its safe format, then asks three things: does
the object predict at all (a dict or a bare array does not), does it take the project's
features (its ``feature_names_in_`` must all be columns of the project's data), and does
``predict`` run on a sample of the project's own rows and return one answer per row.
Anything else is refused before a version exists, so no alias can ever point at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evertrain.data.logs import PREDICTION_COLUMNS
from evertrain.data.sources import open_source
from evertrain.evaluate.scoring import model_frame, wants_categories
from evertrain.exceptions import DataValidationError, EvertrainError
from evertrain.spec import Spec

#: Rows of the project's data the model predicts on before it is registered: enough to
#: meet every column's types and most categories, few enough to take milliseconds.
SAMPLE_ROWS = 200


def project_features(spec: Spec, columns: list[str]) -> list[str]:
    """The features a model of this project takes: the spec's list, else every column but the
    target, the time, label-time and id columns and the serving log's own columns."""
    if spec.model.features:
        return list(spec.model.features)
    skip = {spec.model.target, spec.data.time_column, spec.data.id_column, spec.data.label_time_column}
    return [c for c in columns if c not in skip and c not in PREDICTION_COLUMNS]


def check_servable(model: Any, spec: Spec, project: Path, *, what: str, logs_url: str | None = None) -> int:
    """Refuse ``model`` unless it predicts on the project's rows; returns how many rows it answered.

    ``what`` names the model in messages (``model file churn.skops``). A project whose
    source has no rows yet (a log source before any traffic) is checked on its feature
    names alone, and 0 is returned.
    """
    if not callable(getattr(model, "predict", None)):
        raise DataValidationError(
            f"{what}: holds a {type(model).__name__}, not a model with predict(); it cannot be served"
        )
    try:
        frame = open_source(
            spec.data.source,
            base=project,
            logs_url=logs_url,
            model=spec.model.name,
            target=spec.model.target,
            time_column=spec.data.time_column,
        ).read()
    except EvertrainError as exc:
        raise DataValidationError(f"{what}: cannot read the project's data to check it on: {exc}") from None
    features = project_features(spec, [str(c) for c in frame.columns])
    names = getattr(model, "feature_names_in_", None)
    wanted = [str(n) for n in names] if names is not None else features
    missing = [f for f in wanted if f not in frame.columns]
    if missing and len(frame.columns):
        raise DataValidationError(
            f"{what}: takes feature(s) {', '.join(map(repr, missing[:5]))} that the project's data "
            f"lacks (its columns: {', '.join(map(str, list(frame.columns)[:10]))})"
        )
    if names is not None and spec.model.features and set(wanted) != set(spec.model.features):
        raise DataValidationError(
            f"{what}: takes features {sorted(wanted)}, but evertrain.yaml lists {sorted(spec.model.features)}"
        )
    n_in = getattr(model, "n_features_in_", None)
    if names is None and n_in is not None and int(n_in) != len(features):
        raise DataValidationError(
            f"{what}: takes {int(n_in)} features, but the project has {len(features)} "
            f"({', '.join(features[:10])})"
        )
    sample = frame.head(SAMPLE_ROWS)
    if len(sample) == 0:
        return 0
    X: Any = model_frame(sample, wanted, categorical_as_category=wants_categories(model))
    if names is None:
        X = X.to_numpy()
    try:
        out = np.asarray(model.predict(X))
    except Exception as exc:  # any failure of foreign code is the answer to this check
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataValidationError(
            f"{what}: predict() failed on {len(sample)} rows of the project's data: "
            f"{type(exc).__name__}: {first}"
        ) from None
    if out.ndim == 0 or len(out) != len(sample):
        raise DataValidationError(
            f"{what}: predict() returned {out.shape} for {len(sample)} rows; expected one answer per row"
        )
    return len(sample)
