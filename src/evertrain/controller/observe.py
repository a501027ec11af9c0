"""What the controller reads from the serving logs for a cycle, and the realized metric.

The logs are read through :mod:`evertrain.data.logs` (the one reader of their layout):
its ``read_log`` gives the recent served rows and ``labelled`` the ones whose labels have
arrived; :func:`realized_metric` scores those against their labels. It lives here, above
``evaluate``, because it needs the metrics registry that ``data`` may not import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["realized_metric"]


def realized_metric(table: pa.Table, metric: str, task: str) -> float | None:
    """``metric`` of logged predictions against their labels.

    None without rows, or for a metric that needs probabilities when the log holds none
    (only binary models log one, the positive class's ``score``) or that is undefined on
    these rows (ROC AUC with one class). Classification labels and predictions are compared
    as numbers when both are numbers, else as text.
    """
    from evertrain.evaluate.metrics import Outputs, get_metric

    if table.num_rows == 0:
        return None
    measure = get_metric(metric)
    if task == "generation":
        return _generation_metric(table, measure)
    if task == "regression":
        label = np.asarray(table["label"], dtype=float)
        value = measure(Outputs.regression(label, np.asarray(table["prediction"], dtype=float)))
        return value if np.isfinite(value) else None
    pred, label = table["prediction"], table["label"]
    numeric = all(pa.types.is_floating(c.type) or pa.types.is_integer(c.type) for c in (pred, label))
    if numeric:
        y, p = np.asarray(label, dtype=float), np.asarray(pred, dtype=float)
    else:
        y, p = (np.asarray(pc.cast(c, pa.string()).fill_null("")) for c in (label, pred))
    classes = np.unique(np.concatenate([y, p]))
    y_index, p_index = np.searchsorted(classes, y), np.searchsorted(classes, p)
    proba = None
    if measure.needs_proba:
        scores = table["score"] if "score" in table.column_names else None
        if not numeric or scores is None or scores.null_count or not set(classes.tolist()) <= {0.0, 1.0}:
            return None
        s = np.asarray(scores, dtype=float)
        proba, y_index, p_index = np.column_stack([1.0 - s, s]), y.astype(int), p.astype(int)
    kind = "binary" if proba is not None or len(classes) <= 2 else "multiclass"
    value = measure(Outputs(kind, y_index, p_index, proba))
    return value if np.isfinite(value) else None


def _generation_metric(table: pa.Table, measure: Any) -> float | None:
    """A generator's answers against the reference answers its labels give: exact match or token
    F1. None for perplexity, which needs the model's likelihoods, not its logged answers."""
    from evertrain.evaluate.metrics import Outputs, exact_match_rows, token_f1_rows

    if measure.name not in ("exact_match", "token_f1"):
        return None
    answers = [str(v) for v in pc.cast(table["prediction"], pa.string()).fill_null("").to_pylist()]
    references = [str(v) for v in pc.cast(table["label"], pa.string()).fill_null("").to_pylist()]
    zeros = np.zeros(len(answers))
    outputs = Outputs.generation(
        zeros, zeros, exact_match_rows(answers, references), token_f1_rows(answers, references)
    )
    value = measure(outputs)
    return value if np.isfinite(value) else None
