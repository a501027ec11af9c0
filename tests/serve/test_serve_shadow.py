"""A slow shadow sees the traffic but adds nothing to the champion's response time and changes no answer."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy import stats
from servekit import LiveServer, classifier, client, instances, read_log, register, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec
from evertrain.store import Store

BLOCK = 60  # requests per block; blocks alternate without and with the shadow
BLOCKS = 4
SHADOW_SECONDS = 0.1  # many times a champion answer: inline, every response would wait for it (and the
# shadow, busy sleeping, runs few predictions: its own CPU cost stays small on a loaded machine)


def timed(c: Any, rows: list[dict[str, float]]) -> tuple[list[float], list[Any]]:
    times, answers = [], []
    for i, row in enumerate(rows):
        start = time.perf_counter()
        r = c.post(
            "/v1/models/m:predict", json={"instances": [row], "request_ids": [f"q{time.monotonic_ns()}-{i}"]}
        )
        times.append(time.perf_counter() - start)
        assert r.status_code == 200 and r.headers["x-evertrain-arm"] == "champion"
        answers.append(r.json()["predictions"])
    return times, answers


def test_a_slow_shadow_leaves_champion_latency_and_answers_alone(store: Store) -> None:
    v1 = register(store, "m", classifier(0))
    v2 = register(store, "m", classifier(1))
    store.registry.promote("m", v1, actor="test")
    app = create_app(
        store, serving=ServingSpec(poll_seconds=0.05, shadow_queue_max=20, log=LogSpec(flush_seconds=0.1))
    )
    server = app.state.server
    rows = instances(BLOCK, seed=7)
    without: list[float] = []
    with_shadow: list[float] = []
    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20)
        _, reference = timed(c, rows)  # warm
        for block in range(BLOCKS):
            if block % 2:
                store.registry.set_alias("m", "shadow", v2, actor="test")
                wait_until(lambda: c.get("/v1/models/m").json()["serving"]["shadow"] == v2)
                shadow = server.manager.routes("m").shadow
                real = shadow.predict

                def slow(columns: Any, real: Any = real) -> Any:
                    time.sleep(SHADOW_SECONDS)
                    return real(columns)

                shadow.predict = slow
                times, answers = timed(c, rows)
                with_shadow += times
                store.registry.set_alias("m", "shadow", None, actor="test")
                wait_until(lambda: c.get("/v1/models/m").json()["serving"]["shadow"] is None)
            else:
                times, answers = timed(c, rows)
                without += times
            assert answers == reference  # the shadow never changes a response
        assert server.flush()
    log = read_log(store, "predictions", "m")
    assert (log["arm"] == "shadow").sum() > 0  # it did see traffic
    # Compare distributions, not clock readings: the chance that a request with the shadow is
    # slower than one without. An inline shadow would push it near 1; off the path it stays near 1/2.
    u = stats.mannwhitneyu(with_shadow, without, alternative="greater").statistic
    slower_chance = u / (len(with_shadow) * len(without))
    assert slower_chance < 0.75, (slower_chance, np.median(with_shadow), np.median(without))
