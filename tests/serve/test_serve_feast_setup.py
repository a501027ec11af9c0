"""A project whose serving reads Feast, where Feast cannot start: the replica says why, and serves
nothing it would have to guess. (Serving from a real Feast repo: tests/integrations/test_feast.py.)"""

from __future__ import annotations

import sys

import pytest
from servekit import LiveServer, classifier, client, register, wait_until

from evertrain.serve import create_app
from evertrain.spec import Spec, SpecError, parse_spec
from evertrain.store import Store

SPEC = {
    "model": {"name": "churn", "target": "label"},
    "data": {"source": {"kind": "csv", "path": "rows.csv"}},
    "serving": {
        "poll_seconds": 0.05,
        "feast": {"repo": "features", "features": ["region_stats:promo"], "python": sys.executable},
    },
}


def test_a_feast_that_cannot_start_is_named_by_readyz_and_predict(store: Store) -> None:
    store.registry.promote("churn", register(store, "churn", classifier(0)), actor="test")
    app = create_app(store, Spec.model_validate(SPEC))  # evertrain's own Python: no feast in it
    with LiveServer(app) as live, client(live.url) as c:
        # "starting" until the worker's start has failed (a loaded machine takes its time).
        wait_until(
            lambda: c.get("/readyz").json().get("feast", "starting") != "starting",
            60,
            "readyz never said why Feast is not there",
        )
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "pip install feast" in ready.json()["feast"]
        answer = c.post("/v1/models/churn:predict", json={"instances": [{"region": "east", "x0": 1.0}]})
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert "Feast's online store is not reachable" in answer.json()["error"]
        assert c.get("/healthz").status_code == 200


def test_serving_feast_settings_are_checked_and_default_to_the_feast_source() -> None:
    head = "model: {name: m, target: y}\ndata: {source: {kind: csv, path: a.csv}}\n"
    with pytest.raises(SpecError, match="needs 'repo' and 'features' or 'feature_service'"):
        parse_spec(head + "serving: {feast: {}}\n")
    with pytest.raises(SpecError, match="either 'features' or 'feature_service'"):
        parse_spec(head + "serving: {feast: {repo: f, features: ['v:a'], feature_service: s}}\n")
    feast_source = {
        "kind": "feast",
        "repo": "features",
        "features": ["region_stats:promo"],
        "entities": {"kind": "log"},
        "python": "/opt/feast/bin/python",
    }
    spec = Spec.model_validate({"model": {"name": "m", "target": "y"}, "data": {"source": feast_source}})
    serving = spec.feast_serving()
    assert serving is not None and serving.online and serving.entity_keys is None
    assert (serving.repo, serving.features, serving.python) == (
        "features",
        ["region_stats:promo"],
        "/opt/feast/bin/python",
    )
    spec = Spec.model_validate(
        {
            "model": {"name": "m", "target": "y"},
            "data": {"source": feast_source},
            "serving": {"feast": {"feature_service": "churn_v2", "online": False}},
        }
    )
    serving = spec.feast_serving()
    assert serving is not None and serving.features is None and serving.feature_service == "churn_v2"
    assert not serving.online and serving.repo == "features"
    assert (
        Spec.model_validate(
            {"model": {"name": "m", "target": "y"}, "data": {"source": {"kind": "log"}}}
        ).feast_serving()
        is None
    )
