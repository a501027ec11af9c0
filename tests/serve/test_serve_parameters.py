"""Predict parameters (probabilities, scores), the model list and unknown feedback ids, over real HTTP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from servekit import LiveServer, classifier, client, constant, instances, register, training_frame, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec
from evertrain.store import Store


def serving() -> ServingSpec:
    return ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.05))


def three_classes() -> Any:
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame(0)
    return LogisticRegression(max_iter=500).fit(X, y + (X["x0"].to_numpy() > 1).astype(int))


@pytest.fixture
def served(store: Store) -> Store:
    for name, model in (("churn", classifier(0)), ("tiers", three_classes()), ("price", constant(3.0))):
        store.registry.promote(name, register(store, name, model), actor="test")
    return store


def test_probabilities_and_scores_on_request(served: Store) -> None:
    rows = instances(4)
    expected = classifier(0).predict_proba(__import__("pandas").DataFrame(rows))
    with LiveServer(create_app(served, serving=serving())) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20, "never ready")
        plain = c.post("/v1/models/churn:predict", json={"instances": rows}).json()
        assert "probabilities" not in plain and "scores" not in plain

        body = c.post(
            "/v1/models/churn:predict", json={"instances": rows, "parameters": {"return": "probabilities"}}
        ).json()
        assert body["classes"] == [0, 1]
        assert np.allclose(body["probabilities"], expected)
        assert body["predictions"] == plain["predictions"]
        scores = c.post(
            "/v1/models/churn:predict", json={"instances": rows, "parameters": {"return": "scores"}}
        ).json()["scores"]
        assert np.allclose(scores, expected[:, 1])

        multi = c.post(
            "/v1/models/tiers:predict", json={"instances": rows, "parameters": {"return": "probabilities"}}
        ).json()
        assert multi["classes"] == [0, 1, 2] and all(abs(sum(p) - 1) < 1e-9 for p in multi["probabilities"])
        top = c.post(
            "/v1/models/tiers:predict", json={"instances": rows, "parameters": {"return": "scores"}}
        ).json()["scores"]
        assert top == [max(p) for p in multi["probabilities"]]

        for name, params, field in (
            ("price", {"return": "probabilities"}, "parameters.return"),
            ("churn", {"return": "logits"}, "parameters.return"),
            ("churn", {"temperature": 1}, "parameters.temperature"),
            ("churn", ["probabilities"], "parameters"),
        ):
            r = c.post(f"/v1/models/{name}:predict", json={"instances": rows, "parameters": params})
            assert r.status_code == 422 and r.json()["field"] == field, (name, params, r.text)


def test_model_list_and_unknown_feedback_ids(served: Store) -> None:
    with LiveServer(create_app(served, serving=serving())) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20, "never ready")
        listed = c.get("/v1/models").json()
        assert listed["models"] == ["churn", "price", "tiers"]
        assert listed["ready"] == {"churn": True, "price": True, "tiers": True}
        assert listed["versions"]["churn"] == {"champion": 1, "canary": None, "shadow": None}

        c.post("/v1/models/churn:predict", json={"instances": instances(2), "request_ids": ["a", "b"]})
        fb = c.post(
            "/v1/models/churn:feedback",
            json={"labels": [{"request_id": "a", "label": 1}, {"request_id": "zz", "label": 0}]},
        )
        assert fb.status_code == 200 and fb.json() == {"accepted": 2, "unknown_request_ids": ["zz"]}
        # An id answered before this server started is found in the shared prediction log.
    with LiveServer(create_app(served, serving=serving())) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20, "never ready")
        fb = c.post("/v1/models/churn:feedback", json={"labels": [{"request_id": "b", "label": 1}]})
        assert fb.json() == {"accepted": 1, "unknown_request_ids": []}
        c.post("/v1/models/churn:feedback", json={"labels": [{"request_id": "nope", "label": 1}]})
        metrics = c.get("/metrics").text
        assert 'evertrain_feedback_unknown_ids_total{model="churn"} 1.0' in metrics
