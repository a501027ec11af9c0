"""Adaptive batching on a real server: many clients at once, one model call, each request on its own.

Concurrent requests to one version are answered from one model call, yet each keeps its
own answer (the same as when it is served alone), its own 422, its own log rows and its
own count in the metrics. The model is slowed a little so that requests pile up while
it runs, as they do on a busy server; a bad row in one request leaves the others alone.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import numpy as np
import pytest
from servekit import FEATURES, NODELAY, LiveServer, instances, read_log, register, training_frame, wait_until

from evertrain.exceptions import InputError
from evertrain.serve import create_app
from evertrain.serve.batching import Batches, Ticket, batchable, predict_together
from evertrain.serve.bodies import parse_feedback, parse_predict
from evertrain.serve.router import bucket
from evertrain.spec import BatchingSpec, LogSpec, ServingSpec
from evertrain.store import Store

CLIENTS = 24
MODEL_SECONDS = 0.01  # each model call: long enough that the requests of the other clients pile up
REFUSED = 3.25  # a value the wrapped model refuses (ValueError): the input passes the schema, not the model


def booster(seed: int) -> Any:
    """A gradient-boosted classifier on x0..x3 (one thread: no OpenMP spinning on a busy host)."""
    import lightgbm

    X, y = training_frame(seed)
    return lightgbm.LGBMClassifier(n_estimators=20, num_threads=1, verbose=-1, random_state=seed).fit(X, y)


def register_booster(store: Store, seed: int) -> int:
    return register(store, "m", booster(seed), framework="lightgbm")


def slowed(model: Any, calls: list[int]) -> None:
    """Make ``model`` (a loaded version) take MODEL_SECONDS per call, count its rows, refuse REFUSED."""
    real = model.predict

    def predict(columns: dict[str, list[Any]]) -> Any:
        calls.append(len(columns["x0"]))
        time.sleep(MODEL_SECONDS)
        if REFUSED in columns["x3"]:
            raise ValueError(f"x3 = {REFUSED} is not a value this model takes")
        return real(columns)

    model.predict = predict


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def requests_of(k: int) -> dict[str, Any]:
    """Request ``k``: one to three rows with its own ids; some are bad in one row."""
    rows = instances(1 + k % 3, seed=100 + k)
    if k % 7 == 3:
        rows[-1] = {**rows[-1], "x1": "oops"}  # refused by the schema: 422 naming the field
    if k % 11 == 5:
        rows[0] = {**rows[0], "x3": REFUSED}  # passes the schema, refused by the model: 422
    return {"instances": rows, "request_ids": [f"r{k}-{i}" for i in range(len(rows))]}


async def fire(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    transport = httpx.AsyncHTTPTransport(socket_options=NODELAY, limits=limits)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as c:
        return list(await asyncio.gather(*(c.post("/v1/models/m:predict", json=b) for b in bodies)))


def test_concurrent_clients_get_their_own_answers_from_shared_model_calls(store: Store) -> None:
    version = register_booster(store, 0)
    store.registry.promote("m", version, actor="test")
    serving = ServingSpec(
        poll_seconds=0.05, log=LogSpec(flush_seconds=0.1), batching=BatchingSpec(max_wait_ms=200.0)
    )
    app = create_app(store, serving=serving)
    server = app.state.server
    bodies = [requests_of(k) for k in range(CLIENTS * 3)]
    with LiveServer(app) as live:
        wait_until(lambda: httpx.get(f"{live.url}/readyz").status_code == 200, 20)
        model = server.manager.routes("m").champion
        # What each request gets when served alone: the reference answers.
        alone = {}
        for k, body in enumerate(bodies):
            try:
                alone[k] = model.predict(model.schema.columns(body["instances"]))
            except (InputError, ValueError):
                alone[k] = None
        calls: list[int] = []
        slowed(model, calls)
        responses = asyncio.run(fire(live.url, bodies))
        metrics = httpx.get(f"{live.url}/metrics").text
        assert server.flush()

    answered = {}
    for k, (body, r) in enumerate(zip(bodies, responses, strict=True)):
        if k % 7 == 3:
            assert r.status_code == 422, r.text
            assert r.json()["field"] == f"instances[{len(body['instances']) - 1}].x1"
        elif k % 11 == 5:
            assert r.status_code == 422, r.text
            assert "x3 = 3.25 is not a value this model takes" in r.json()["error"]
        else:
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["request_ids"] == body["request_ids"]
            assert got["predictions"] == alone[k][0]  # the same as served alone
            answered[k] = got
    assert len(answered) > CLIENTS  # most were answered despite their bad neighbours
    # Batches did form: fewer model calls than requests that reached the model.
    reached = len(answered) + sum(1 for k in range(len(bodies)) if k % 11 == 5 and k % 7 != 3)
    assert metric(metrics, "evertrain_batch_requests_count") < reached
    assert max(calls) > 3
    # The logs hold every answered row exactly once, with its own prediction and score.
    log = read_log(store, "predictions", "m")
    expected_ids = [rid for k in answered for rid in bodies[k]["request_ids"]]
    assert sorted(log["request_id"]) == sorted(expected_ids)
    by_id = log.set_index("request_id")
    for k, got in answered.items():
        for i, rid in enumerate(got["request_ids"]):
            assert by_id.loc[rid, "prediction"] == got["predictions"][i]
            assert by_id.loc[rid, "score"] == alone[k][1][i]
            assert by_id.loc[rid, "x0"] == bodies[k]["instances"][i]["x0"]
            assert by_id.loc[rid, "latency_ms"] >= MODEL_SECONDS * 1000.0
    # Each request counted once, with its own rows and latency.
    n_rows = sum(len(bodies[k]["instances"]) for k in answered)
    assert metric(metrics, "evertrain_requests_total", arm="champion") == len(answered)
    assert metric(metrics, "evertrain_instances_total", arm="champion") == n_rows
    assert metric(metrics, "evertrain_predict_latency_seconds_count", arm="champion") == len(answered)
    assert metric(metrics, "evertrain_request_latency_seconds_count", model="m") == len(answered)
    assert metric(metrics, "evertrain_errors_total", kind="validation") == len(bodies) - len(answered)


def test_canary_and_shadow_are_routed_and_logged_as_without_batching(store: Store) -> None:
    v1 = register_booster(store, 0)
    v2 = register_booster(store, 1)
    v3 = register_booster(store, 2)
    store.registry.promote("m", v1, actor="test")
    store.registry.set_alias("m", "canary", v2, actor="test")
    store.registry.set_alias("m", "shadow", v3, actor="test")
    serving = ServingSpec(
        poll_seconds=0.05, log=LogSpec(flush_seconds=0.1), batching=BatchingSpec(max_wait_ms=200.0)
    )
    app = create_app(store, serving=serving)
    server = app.state.server
    with LiveServer(app) as live:
        wait_until(lambda: httpx.get(f"{live.url}/readyz").status_code == 200, 20)
        wait_until(lambda: server.manager.routes("m").shadow is not None, 20)
        routes = server.manager.routes("m")
        assert routes.canary is not None and routes.shadow is not None and routes.share > 0
        # The arm each request must reach: its first id is its routing key (no secret set here).
        arm_of = {}
        for k in range(10_000):
            key = f"c{k}-0"
            arm = "canary" if bucket(key, f"m/{v2}") < routes.share else "champion"
            if sum(a == arm for a in arm_of.values()) < CLIENTS:
                arm_of[k] = arm
            if len(arm_of) == 2 * CLIENTS:
                break
        bodies = [{"instances": instances(2, seed=k), "request_ids": [f"c{k}-0", f"c{k}-1"]} for k in arm_of]
        for arm_model in (routes.champion, routes.canary, routes.shadow):
            slowed(arm_model, [])
        responses = asyncio.run(fire(live.url, bodies))
        assert server.flush()
    versions = {v1: routes.champion, v2: routes.canary, v3: routes.shadow}
    answered = {}
    for k, body, r in zip(arm_of, bodies, responses, strict=True):
        assert r.status_code == 200, r.text
        assert r.headers["x-evertrain-arm"] == arm_of[k]
        got = r.json()
        assert int(got["model_version"]) == (v2 if arm_of[k] == "canary" else v1)
        model = versions[int(got["model_version"])]
        columns = model.schema.columns(body["instances"])
        assert got["predictions"] == model.estimator.predict(model.inputs(columns)).tolist()
        answered.update(dict.fromkeys(got["request_ids"], arm_of[k]))
    log = read_log(store, "predictions", "m")
    served = log[log["arm"] != "shadow"]
    shadowed = log[log["arm"] == "shadow"]
    assert sorted(served["request_id"]) == sorted(answered)  # every row once, under its arm
    assert dict(zip(served["request_id"], served["arm"], strict=True)) == answered
    assert sorted(shadowed["request_id"]) == sorted(answered)  # and once more for the shadow
    assert set(shadowed["model_version"]) == {v3}


def test_a_model_that_cannot_batch_is_called_once_per_request(store: Store) -> None:
    version = register_booster(store, 0)
    store.registry.promote("m", version, actor="test")
    app = create_app(store, serving=ServingSpec(poll_seconds=0.05, batching=BatchingSpec(max_wait_ms=200.0)))
    server = app.state.server
    bodies = [{"instances": instances(1, seed=k)} for k in range(CLIENTS)]
    with LiveServer(app) as live:
        wait_until(lambda: httpx.get(f"{live.url}/readyz").status_code == 200, 20)
        model = server.manager.routes("m").champion
        assert batchable(model)
        model.estimator.batchable = False  # what a model whose rows depend on each other says
        assert not batchable(model)
        calls: list[int] = []
        slowed(model, calls)
        responses = asyncio.run(fire(live.url, bodies))
    assert all(r.status_code == 200 for r in responses)
    assert calls == [1] * CLIENTS


def test_batches_answer_each_request_and_isolate_a_failure() -> None:
    """The gathering itself, without HTTP: three requests, one call, one failure that stays its own."""
    from servekit import SCHEMA

    from evertrain.train.inputs import InputSchema, rule_from_schema
    from evertrain.train.predictor import LoadedModel

    rules = [
        rule_from_schema(
            f, SCHEMA["columns"][f], fallback="numeric", range_tolerance=0.5, unknown_categories="accept"
        )
        for f in FEATURES
    ]
    from evertrain.store.formats import get_format

    fmt = get_format("lightgbm")
    model = LoadedModel("m", 1, fmt.loads(fmt.dumps(booster(0))), InputSchema(rules), "binary")
    calls: list[int] = []
    slowed(model, calls)
    parts = [instances(2, seed=1), instances(1, seed=2), [{**instances(1, seed=3)[0], "x3": REFUSED}]]

    async def go() -> list[Any]:
        batches = Batches("m", BatchingSpec(max_wait_ms=1000.0))
        tickets = [batches.arrive() for _ in parts]
        assert all(isinstance(t, Ticket) for t in tickets)
        jobs = [
            batches.predict(model, model.schema.columns(rows), len(rows), t)
            for rows, t in zip(parts, tickets, strict=True)
        ]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    results = asyncio.run(go())
    assert calls[0] == 4  # one call for all four rows first; it failed, so each request alone
    assert sorted(calls[1:]) == [1, 1, 2]
    for rows, result in zip(parts[:2], results[:2], strict=True):
        (predictions, scores), seconds = result
        alone = predict_together(model, [model.schema.columns(rows)])[0]
        assert (predictions, scores) == alone
        assert seconds >= MODEL_SECONDS
    assert isinstance(results[2], ValueError)


def test_bodies_are_read_fast_and_refused_with_the_same_messages() -> None:
    good = parse_predict(b'{"instances": [[1, 2, 3, 4]], "request_ids": ["a"], "extra": 1}', 10)
    assert (good.instances, good.ids, good.wanted) == ([[1, 2, 3, 4]], ["a"], "predictions")
    cases = {
        b'{"instances": [{"x0": NaN}]}': ("body", "not valid JSON"),
        b'{"instances": []}': ("instances", "expected at least one instance"),
        b'{"instances": {"x0": 1}}': ("instances", "expected an array of instances, got object"),
        b'{"rows": []}': ("instances", "missing field"),
        b'{"instances": [1, 2], "request_ids": ["a", "a"]}': ("request_ids", "must be unique"),
        b'{"instances": [1], "parameters": {"return": "all"}}': ("parameters.return", "expected one of"),
        b'{"instances": [1], "parameters": {"k": 1}}': ("parameters.k", "unknown parameter"),
        b'{"instances": [{"x": "\\ud800"}]}': ("instances[0].x", "lone surrogate"),
        b'{"instances": [1, 2, 3]}': ("instances", "more than the 2 accepted"),
        b"[]": ("body", "expected a JSON object"),
    }
    for data, (field, message) in cases.items():
        with pytest.raises(InputError) as caught:
            parse_predict(data, 2)
        assert caught.value.field == field, data
        assert message in caught.value.message, (data, caught.value.message)
    assert parse_feedback(b'{"labels": [{"request_id": "a", "label": 1}]}', 5) == [
        {"request_id": "a", "label": 1}
    ]
    with pytest.raises(InputError, match="expected at least one label"):
        parse_feedback(b'{"labels": []}', 5)
    assert np.isfinite(good.instances[0]).all()
