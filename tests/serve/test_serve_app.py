"""The HTTP app on a real loopback server: shapes, logs, metrics, admin, routing."""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd
import pytest
from servekit import LiveServer, classifier, client, constant, instances, read_log, register, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec
from evertrain.store import Store

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def serving(**kw: Any) -> ServingSpec:
    return ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.05), **kw)


def ready(client: httpx.Client) -> None:
    wait_until(lambda: client.get("/readyz").status_code == 200, 20, "server never became ready")


@pytest.fixture
def champion(store: Store) -> int:
    v = register(store, "churn", classifier(0))
    store.registry.promote("churn", v, actor="test")
    return v


def test_kserve_shapes_status_health_and_logs(store: Store, champion: int) -> None:
    app = create_app(store, serving=serving(), admin_token=TOKEN)
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        rows = instances(5)
        r = c.post("/v1/models/churn:predict", json={"instances": rows, "request_ids": list("abcde")})
        assert r.status_code == 200
        body = r.json()
        assert body["model_version"] == str(champion)
        assert body["request_ids"] == list("abcde")
        assert body["predictions"] == classifier(0).predict(pd.DataFrame(rows)).tolist()
        positional = c.post("/v1/models/churn:predict", json={"instances": [list(rows[0].values())]})
        assert positional.json()["predictions"] == body["predictions"][:1]
        assert len(positional.json()["request_ids"][0]) == 32

        status = c.get("/v1/models/churn").json()
        assert status["ready"] is True
        assert status["versions"] == {"champion": champion, "canary": None, "shadow": None}
        assert status["inputs"]["x0"]["type"] == "numeric"
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/v1/models/nope").status_code == 404
        assert c.post("/v1/models/nope:predict", json={"instances": rows}).status_code == 404

        fb = c.post("/v1/models/churn:feedback", json={"labels": [{"request_id": "a", "label": 1}]})
        assert fb.json() == {"accepted": 1, "unknown_request_ids": []}
        bad = c.post("/v1/models/churn:feedback", json={"labels": [{"request_id": "a", "label": "yes"}]})
        assert bad.status_code == 422 and bad.json()["field"] == "labels[0].label"

        metrics = c.get("/metrics").text
        assert f'evertrain_requests_total{{arm="champion",model="churn",version="{champion}"}} 2.0' in metrics
        assert "evertrain_predict_latency_seconds_bucket" in metrics
        assert "evertrain_dropped_rows_total" in metrics or "evertrain_dropped_rows" in metrics
        assert c.get("/openapi.json").json()["paths"]["/v1/models/{name}:predict"]["post"]["requestBody"]
    preds = read_log(store, "predictions", "churn")
    assert len(preds) == 6
    assert set(preds["arm"]) == {"champion"}
    assert list(preds.columns[:7]) == [
        "request_id",
        "ts",
        "model_version",
        "arm",
        "latency_ms",
        "prediction",
        "score",
    ]
    assert {"x0", "x1", "x2", "x3"} <= set(preds.columns)
    assert preds["score"].between(0, 1).all()
    feedback = read_log(store, "feedback", "churn")
    assert feedback.to_dict("records")[0]["label"] == 1.0


def test_admin_routes_need_the_token_and_move_aliases(store: Store, champion: int) -> None:
    v2 = register(store, "churn", constant(7.0))
    app = create_app(store, serving=serving(), admin_token=TOKEN)
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        assert c.post("/admin/models/churn/promote", json={"version": v2}).status_code == 401
        wrong = c.post(
            "/admin/models/churn/promote", json={"version": v2}, headers={"authorization": "Bearer x"}
        )
        assert wrong.status_code == 401
        assert c.get("/admin/models/churn/rollout").status_code == 401
        r = c.post("/admin/models/churn/promote", json={"version": v2, "reason": "test"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["champion"] == v2
        # The handling replica switched before answering.
        out = c.post("/v1/models/churn:predict", json={"instances": instances(1)}).json()
        assert out == {**out, "model_version": str(v2), "predictions": [7.0]}
        r = c.post("/admin/models/churn/rollback", json={"reason": "bad"}, headers=AUTH)
        assert r.json()["action"] == "rollback" and r.json()["champion"] == champion
        assert (
            c.post("/v1/models/churn:predict", json={"instances": instances(1)}).json()["model_version"]
            == "1"
        )
        assert c.post("/admin/models/churn/promote", json={"version": 99}, headers=AUTH).status_code == 404
        assert c.post("/admin/models/churn/promote", json={}, headers=AUTH).status_code == 422
        assert c.get("/admin/models/churn/rollout", headers=AUTH).json()["active"] is None
    assert [e.action for e in store.audit.entries()][-2:] == ["promote", "rollback"]


def test_admin_routes_are_off_without_a_token(store: Store, champion: int) -> None:
    app = create_app(store, serving=serving())
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        r = c.post("/admin/models/churn/rollback", json={}, headers={"authorization": "Bearer guess"})
        assert r.status_code == 401
        assert "EVERTRAIN_ADMIN_TOKEN" in r.json()["error"]


def test_canary_is_sticky_per_key_and_takes_about_its_share(store: Store, champion: int) -> None:
    canary = register(store, "churn", constant(5.0))
    store.registry.set_alias("churn", "canary", canary, actor="test")
    app = create_app(store, serving=serving(), admin_token=TOKEN)
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        wait_until(lambda: c.get("/v1/models/churn").json()["serving"]["canary"] == canary)
        arms = {}
        for i in range(300):
            r = c.post(
                "/v1/models/churn:predict",
                json={"instances": instances(1)},
                headers={"x-evertrain-key": f"u{i}"},
            )
            arms[i] = r.json()["model_version"]
            assert r.headers["x-evertrain-arm"] == ("canary" if arms[i] == str(canary) else "champion")
        share = sum(v == str(canary) for v in arms.values()) / len(arms)
        assert 0.03 < share < 0.2  # default share 0.1 with no rollout and no spec
        for i in range(0, 300, 7):  # the same key reaches the same arm again
            r = c.post(
                "/v1/models/churn:predict",
                json={"instances": instances(1)},
                headers={"x-evertrain-key": f"u{i}"},
            )
            assert r.json()["model_version"] == arms[i]


def test_a_failing_canary_is_answered_by_the_champion_and_logged(store: Store, champion: int) -> None:
    broken = register(store, "churn", constant(1.0), schema=None)  # wants the same four inputs
    store.registry.set_alias("churn", "canary", broken, actor="test")
    app = create_app(store, serving=serving(), admin_token=TOKEN)
    server = app.state.server
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        wait_until(lambda: c.get("/v1/models/churn").json()["serving"]["canary"] == broken)
        canary_model = server.manager.routes("churn").canary

        def boom(columns: Any) -> Any:
            raise RuntimeError("model exploded")

        canary_model.predict = boom
        answers = [
            c.post("/v1/models/churn:predict", json={"instances": instances(1), "request_ids": [f"r{i}"]})
            for i in range(100)
        ]
        assert all(a.status_code == 200 and a.json()["model_version"] == str(champion) for a in answers)
        assert server.flush()
    errors = read_log(store, "errors", "churn")
    assert len(errors) > 0 and set(errors["arm"]) == {"canary"} and set(errors["model_version"]) == {broken}
    assert "model exploded" in errors["error"].iloc[0]
    assert len(read_log(store, "predictions", "churn")) == 100


def test_full_log_queue_drops_rows_and_counts_them_without_failing_requests(
    store: Store, champion: int
) -> None:
    spec = ServingSpec(poll_seconds=0.05, log=LogSpec(queue_max=3, batch_rows=1000, flush_seconds=3600))
    app = create_app(store, serving=spec)
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        codes = [
            c.post("/v1/models/churn:predict", json={"instances": instances(2)}).status_code for _ in range(4)
        ]
        assert codes == [200] * 4
        assert 'evertrain_dropped_rows_total{log="predictions"} 6.0' in c.get("/metrics").text
        labels = [{"request_id": "y", "label": 0}, {"request_id": "z", "label": 1}]
        fb = c.post("/v1/models/churn:feedback", json={"labels": labels})
        assert fb.status_code == 503  # labels are not silently lost: the client is told to retry
    assert len(read_log(store, "predictions", "churn")) == 2  # written on shutdown


def test_without_a_snapshot_inputs_come_from_the_model(store: Store) -> None:
    v = register(store, "plain", classifier(1), schema=None)
    store.registry.promote("plain", v, actor="test")
    app = create_app(store, serving=serving())
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        assert c.get("/v1/models/plain").json()["inputs"]["x3"]["type"] == "numeric"
        assert c.post("/v1/models/plain:predict", json={"instances": instances(2)}).status_code == 200
        r = c.post("/v1/models/plain:predict", json={"instances": [{"x0": 1, "x1": 1, "x2": 1}]})
        assert r.status_code == 422 and r.json()["field"] == "instances[0].x3"


def test_oversized_body_gets_413_and_the_server_keeps_serving(store: Store, champion: int) -> None:
    app = create_app(store, serving=serving(max_body_bytes=4096, max_batch=10))
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        big = c.post("/v1/models/churn:predict", content=b'{"instances": [' + b"1," * 5000 + b"1]}")
        assert big.status_code == 413 and big.json()["field"] == "body"
        many = c.post("/v1/models/churn:predict", json={"instances": instances(11)})
        assert many.status_code == 422 and "more than the 10" in many.json()["error"]
        assert c.post("/v1/models/churn:predict", json={"instances": instances(1)}).status_code == 200


def test_the_dashboards_thread_ends_with_the_app(store: Store, champion: int) -> None:
    """The dashboard renders on a thread of its own; an app that stops (a replica drained, an
    app embedded and closed in a test run) does not leave it behind, idle, until the process ends."""
    import threading

    from evertrain.faces import ui

    def dashboard_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("evertrain-dashboard")}

    before = dashboard_threads()
    app = create_app(store, serving=serving(), admin_token=TOKEN)
    ui.mount(app, store)
    with LiveServer(app) as live, client(live.url) as c:
        ready(c)
        assert c.get("/ui", headers=AUTH).status_code == 200
        mine = dashboard_threads() - before
        assert len(mine) == 1
    wait_until(lambda: not any(t.is_alive() for t in mine), 20, "the dashboard's thread outlived its app")
