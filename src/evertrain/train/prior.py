"""Whether a fitted model predicts its valid rows better than the base rate does.

A model fitted to rows with no signal in them (tomorrow's market direction from today's
returns) learns noise: its answers are worse than always answering the most frequent
class, the base rate it started from. Early stopping does not catch it, since it picks the
best of many noisy iterations on the valid rows. So the training compares the model with
the base rate of its training rows (class frequencies, or the mean of a regression
target) on the valid rows, row by row, with a proper loss (log loss, squared error), and
keeps the model only if its mean loss is lower by more than one standard error of the
paired difference: the rule that chooses among training sets
(:func:`evertrain.train.candidates.choose`), with the base rate as the default a model
must beat. Otherwise the model is the base rate itself.

>>> y = np.array([1, 0, 1, 1] * 50)
>>> base = prior_predictions("binary", np.array([1, 1, 0]), None, 2, len(y))
>>> round(float(base[0]), 3)
0.667
>>> sharp = np.where(y == 1, 0.9, 0.1)
>>> compare(proper_losses("binary", y, sharp), proper_losses("binary", y, base))["model_kept"]
True
>>> compare(proper_losses("binary", y, base), proper_losses("binary", y, base))["model_kept"]
False
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evertrain.train.candidates import choose

#: Probabilities are kept this far from 0 and 1 in the log loss, so that one confident
#: miss cannot outweigh every other row.
EPSILON = 1e-15


def prior_predictions(
    task: str, y_train: np.ndarray, weights: np.ndarray | None, n_classes: int, n_rows: int
) -> np.ndarray:
    """The base rate's predictions for ``n_rows`` rows: P(class 1) (binary), each class's
    probability (multiclass, one column a class) or the mean (regression), from the
    training labels (coded 0..K-1) and their weights."""
    w = np.ones(len(y_train)) if weights is None else np.asarray(weights, dtype=float)
    y = np.asarray(y_train, dtype=float)
    if task == "regression":
        return np.full(n_rows, float(np.average(y, weights=w)))
    shares = np.bincount(y.astype(int), weights=w, minlength=max(n_classes, 2)) / w.sum()
    if task == "binary":
        return np.full(n_rows, float(shares[1]))
    return np.tile(shares, (n_rows, 1))


def proper_losses(task: str, y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Per-row log loss (classification, labels coded 0..K-1) or squared error (regression)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(predictions, dtype=float)
    if task == "regression":
        return (p - y) ** 2
    if task == "binary":
        p = np.clip(p.reshape(len(y)), EPSILON, 1 - EPSILON)
        return -np.where(y == 1, np.log(p), np.log(1 - p))
    p = p.reshape(len(y), -1)
    return -np.log(np.clip(p[np.arange(len(y)), y.astype(int)], EPSILON, 1.0))


def compare(model_losses: np.ndarray, prior_losses: np.ndarray) -> dict[str, Any]:
    """The model's mean gain over the base rate on the same rows, its standard error, and
    whether the model is kept: :func:`~evertrain.train.candidates.choose` with the base rate
    as the default the model must beat."""
    chosen, evidence = choose({"prior": np.asarray(prior_losses), "model": np.asarray(model_losses)})
    model = evidence["model"]
    return {
        "valid_loss": model["valid_loss"],
        "prior_valid_loss": evidence["prior"]["valid_loss"],
        "gain": model["gain"],
        "se": model["se"],
        "rows": int(np.asarray(model_losses).size),
        "model_kept": chosen == "model",
    }


__all__ = ["compare", "prior_predictions", "proper_losses"]
