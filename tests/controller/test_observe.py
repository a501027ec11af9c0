"""Realized metrics of served predictions against the labels that came back for them."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from evertrain.controller.observe import realized_metric
from evertrain.exceptions import UsageError


def test_regression_errors_from_the_log() -> None:
    table = pa.table({"prediction": [1.0, 2.0, 4.0], "label": [1.0, 3.0, 2.0]})
    assert realized_metric(table, "rmse", "regression") == pytest.approx(math.sqrt(5 / 3))
    assert realized_metric(table, "mae", "regression") == pytest.approx(1.0)
    assert realized_metric(pa.table({"prediction": [], "label": []}), "rmse", "regression") is None


def test_binary_metrics_use_the_logged_score_when_they_need_probabilities() -> None:
    table = pa.table(
        {
            "prediction": [1, 0, 1, 0],
            "label": [1.0, 0.0, 0.0, 1.0],
            "score": [0.9, 0.2, 0.6, 0.4],
        }
    )
    assert realized_metric(table, "accuracy", "binary") == 0.5
    assert realized_metric(table, "roc_auc", "binary") == pytest.approx(0.75)
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4
    assert realized_metric(table, "log_loss", "binary") == pytest.approx(expected)
    # Without probabilities in the log there is nothing to compute them from.
    assert realized_metric(table.drop(["score"]), "roc_auc", "binary") is None
    assert realized_metric(table.drop(["score"]), "accuracy", "binary") == 0.5


def test_text_classes_and_unknown_metrics() -> None:
    table = pa.table({"prediction": ["cat", "dog", "bird"], "label": ["cat", "dog", "dog"]})
    assert realized_metric(table, "accuracy", "multiclass") == pytest.approx(2 / 3)
    with pytest.raises(UsageError, match="no_such_metric"):
        realized_metric(table, "no_such_metric", "multiclass")


def test_a_generators_answers_against_the_reference_answers() -> None:
    table = pa.table(
        {
            "prediction": ["Route to the refund desk.", "route to the billing desk", None],
            "label": ["route to the refund desk", "route to the account desk", "route to the delivery desk"],
        }
    )
    assert realized_metric(table, "exact_match", "generation") == pytest.approx(1 / 3)
    # word overlap (articles dropped): all, then 3 of 4 words each (route to ... desk), then none
    assert realized_metric(table, "token_f1", "generation") == pytest.approx((1 + 0.75 + 0) / 3)
    # perplexity needs the model's likelihoods: the logged answers cannot give it
    assert realized_metric(table, "perplexity", "generation") is None
