"""A missing value in a nullable feature is answered; one in a feature that had none is refused."""

from __future__ import annotations

import numpy as np
from servekit import FEATURES, LiveServer, client, register, training_frame, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec, TrainerSpec
from evertrain.store import Store
from evertrain.train.trainers import TrainContext, get_trainer


def test_a_null_in_a_nullable_feature_gets_a_prediction(store: Store) -> None:
    X, y = training_frame(0)
    X.loc[np.random.default_rng(0).random(len(X)) < 0.1, "x2"] = np.nan  # x2 is nullable in SCHEMA
    train = X.assign(label=y)
    context = TrainContext(task="binary", target="label", features=list(FEATURES), log=lambda _: None)
    model = get_trainer(TrainerSpec(kind="sklearn")).fit(train, train.iloc[:0], context)
    version = register(store, "churn", model)
    store.registry.promote("churn", version, actor="test")
    app = create_app(store, serving=ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.05)))
    row = {"x0": 1.5, "x1": 1.0, "x3": 0.0}
    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20, "server never became ready")
        answered = c.post("/v1/models/churn:predict", json={"instances": [{**row, "x2": None}, row]})
        assert answered.status_code == 200, answered.text
        assert answered.json()["predictions"] == [1, 1]
        refused = c.post("/v1/models/churn:predict", json={"instances": [{**row, "x2": 0.0, "x0": None}]})
        assert refused.status_code == 422
        assert "x0" in refused.text
