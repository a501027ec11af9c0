"""Malformed requests, about ten thousand of them: never a 5xx, and good requests keep working.

Most go through the ASGI app in process (the same code a socket reaches, at a fraction of
the cost); a few hundred, and raw bytes that are not even HTTP, go to a real loopback server.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from servekit import FEATURES, LiveServer, classifier, client, instances, register, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec
from evertrain.store import Store

N_IN_PROCESS = 10_000
N_LIVE = 300
GOOD_EVERY = 50  # a good request after every this many bad ones
SEED = 20261130
MAX_BODY = 64 * 1024
MAX_BATCH = 50
SERVING = ServingSpec(
    poll_seconds=0.2, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH, log=LogSpec(flush_seconds=0.2)
)
AUTH = {"authorization": "Bearer t"}


def good_row(rng: random.Random) -> dict[str, Any]:
    return {f: rng.uniform(-3, 3) for f in FEATURES}


def junk_value(rng: random.Random, depth: int = 0) -> Any:
    kinds: list[Callable[[], Any]] = [
        lambda: rng.choice(["", "x", "1.5", "NaN", "\u0000", "\udcff"[:0] + "é" * rng.randint(1, 50)]),
        lambda: rng.choice([True, False, None]),
        lambda: rng.choice([0, -1, 10**30, 10**400, 1e308, -1e308, 2**63, 3.5e-320]),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: "x" * rng.choice([1000, 20_000]),
    ]
    if depth < 3:
        kinds += [
            lambda: [junk_value(rng, depth + 1) for _ in range(rng.randint(0, 4))],
            lambda: {
                rng.choice([*FEATURES, "", "instances", "zz"]): junk_value(rng, depth + 1) for _ in range(3)
            },
        ]
    return rng.choice(kinds)()


def bad_body(rng: random.Random) -> tuple[str, bytes]:
    """One malformed request: (path suffix, body bytes)."""
    choice = rng.randrange(14)
    valid = json.dumps({"instances": [good_row(rng) for _ in range(rng.randint(1, 3))]}).encode()
    if choice == 0:  # random bytes
        return ":predict", bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if choice == 1:  # truncated JSON
        return ":predict", valid[: rng.randrange(len(valid))]
    if choice == 2:  # a few flipped bytes
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return ":predict", bytes(data)
    if choice == 3:  # not JSON numbers, deep nesting, huge numbers
        return ":predict", rng.choice(
            [
                b'{"instances": [{"x0": NaN, "x1": 0, "x2": 0, "x3": 0}]}',
                b'{"instances": [{"x0": Infinity, "x1": 0, "x2": 0, "x3": 0}]}',
                b'{"instances": [{"x0": 1e999, "x1": 0, "x2": 0, "x3": 0}]}',
                b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                b'{"instances": [{"x0": ' + b"9" * 5000 + b', "x1": 0, "x2": 0, "x3": 0}]}',
            ]
        )
    if choice == 4:  # the wrong top level
        return ":predict", json.dumps(junk_value(rng)).encode()
    if choice == 5:  # instances of the wrong kind
        return ":predict", json.dumps({"instances": junk_value(rng)}).encode()
    if choice == 6:  # a feature of the wrong type or out of range
        row = good_row(rng)
        row[rng.choice(FEATURES)] = rng.choice([junk_value(rng), 1e9, -1e9, "3"])
        if all(isinstance(v, float) and abs(v) <= 12 for v in row.values()):
            row["x0"] = "not a number"
        return ":predict", json.dumps({"instances": [row]}).encode()
    if choice == 7:  # a missing feature
        row = good_row(rng)
        del row[rng.choice(["x0", "x1", "x3"])]
        return ":predict", json.dumps({"instances": [row]}).encode()
    if choice == 8:  # bad request ids
        n = rng.randint(1, 3)
        ids = rng.choice([["a"] * n, [1] * n, ["x" * 500] * n, ["a"] * (n + 1), "abc", [""] * n])
        if ids == ["a"]:
            ids = ["a", "a"]
        return ":predict", json.dumps(
            {"instances": [good_row(rng) for _ in range(n)], "request_ids": ids}
        ).encode()
    if choice == 9:  # too many instances, or a body over the limit
        if rng.random() < 0.5:
            return ":predict", json.dumps(
                {"instances": [good_row(rng) for _ in range(MAX_BATCH + 1)]}
            ).encode()
        return ":predict", b'{"instances": ["' + b"x" * (MAX_BODY + 10) + b'"]}'
    if choice == 10:  # array instances of the wrong length
        return ":predict", json.dumps({"instances": [[0.0] * rng.choice([0, 1, 3, 5])]}).encode()
    if choice == 11:  # feedback that is wrong somewhere
        item = rng.choice(
            [
                {"request_id": junk_value(rng), "label": 1},
                {"request_id": "a", "label": rng.choice([None, [1], {"a": 1}, "x" * 500])},
                {"label": 1},
                junk_value(rng),
            ]
        )
        if isinstance(item, dict) and isinstance(item.get("request_id"), str) and item.get("label") == 1:
            item = {"request_id": "", "label": 1}
        return ":feedback", json.dumps({"labels": rng.choice([[item], item, [], None])}).encode()
    if choice == 12:  # empty or blank bodies
        return rng.choice([":predict", ":feedback"]), rng.choice([b"", b"   ", b"\n", b"null"])
    return ":predict", json.dumps({"instances": [junk_value(rng) for _ in range(rng.randint(1, 3))]}).encode()


def is_good_shape(body: dict[str, Any], n: int) -> bool:
    return len(body["predictions"]) == n and len(body["request_ids"]) == n and body["model_version"] == "1"


def test_ten_thousand_malformed_requests_in_process_never_get_a_5xx(store: Store) -> None:
    store.registry.promote("m", register(store, "m", classifier(0)), actor="test")
    app = create_app(store, serving=SERVING, admin_token="t")
    server = app.state.server
    server.start()
    try:
        wait_until(server.manager.ready, 20)
        codes = asyncio.run(_fuzz(app))
    finally:
        server.stop()
    assert not [c for c in codes if c >= 500], codes
    assert codes[200] >= N_IN_PROCESS // GOOD_EVERY
    assert set(codes) <= {200, 413, 422}
    assert sum(codes.values()) == N_IN_PROCESS + N_IN_PROCESS // GOOD_EVERY


async def _fuzz(app: Any) -> Counter[int]:
    rng = random.Random(SEED)
    codes: Counter[int] = Counter()
    lucky = 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as c:
        for i in range(1, N_IN_PROCESS + 1):
            suffix, body = bad_body(rng)
            r = await c.post(
                f"/v1/models/m{suffix}", content=body, headers={"content-type": "application/json"}
            )
            codes[r.status_code] += 1
            if r.status_code >= 500:
                raise AssertionError(f"{body[:200]!r} -> {r.status_code} {r.text[:300]}")
            if r.status_code == 200:  # a flipped byte can leave valid JSON (a space for a tab)
                lucky += 1
                assert is_good_shape(r.json(), len(json.loads(body)["instances"])), body
                continue
            err = r.json()
            assert err["error"] and "field" in err
            if i % GOOD_EVERY == 0:
                rows = [good_row(rng) for _ in range(2)]
                ok = await c.post("/v1/models/m:predict", json={"instances": rows})
                codes[ok.status_code] += 1
                assert ok.status_code == 200 and is_good_shape(ok.json(), 2), ok.text
    assert lucky < N_IN_PROCESS // 100  # nearly every request was malformed
    return codes


def test_malformed_requests_and_raw_garbage_on_a_live_server(store: Store) -> None:
    store.registry.promote("m", register(store, "m", classifier(0)), actor="test")
    app = create_app(store, serving=SERVING, admin_token="t")
    rng = random.Random(SEED + 1)
    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20)
        for i in range(N_LIVE):
            suffix, body = bad_body(rng)
            r = c.post(f"/v1/models/m{suffix}", content=body)
            assert r.status_code < 500, (body[:200], r.status_code, r.text[:300])
            if i % 3 == 0:  # admin bodies that are wrong, with the token
                path = rng.choice(["promote", "rollback", "rollout"])
                r = c.post(
                    f"/admin/models/m/{path}", content=json.dumps(junk_value(rng)).encode(), headers=AUTH
                )
                assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        for raw in (
            b"GARBAGE\r\n\r\n",
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{",
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{}",
            bytes(range(256)) * 4,
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        ):
            with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
                assert not reply.startswith(b"HTTP/1.1 5"), reply[:200]
        r = c.post("/v1/models/m:predict", json={"instances": instances(3)})
        assert r.status_code == 200 and is_good_shape(r.json(), 3)
        assert c.get("/healthz").status_code == 200
        assert 'kind="validation"' in c.get("/metrics").text
