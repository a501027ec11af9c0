"""Hot swaps and rollbacks under a steady loopback load: no failed request, every answer names its maker."""

from __future__ import annotations

import threading
import time
from typing import Any

from servekit import LiveServer, client, constant, instances, register, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec
from evertrain.store import Store

SWAPS = 20
ROLLBACKS = 5
LOAD_THREADS = 3
MAX_REQUESTS = 30_000  # per thread: the load stops by itself even if the test body hangs
MAX_SECONDS = 120.0
AUTH = {"authorization": "Bearer t"}


def test_twenty_swaps_and_five_rollbacks_under_load_fail_no_request(store: Store) -> None:
    # Version k always answers k, so a response proves which version produced it.
    versions = [register(store, "m", constant(float(k + 1))) for k in range(4)]
    assert versions == [1, 2, 3, 4]
    store.registry.promote("m", 1, actor="test")
    app = create_app(
        store, serving=ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.2)), admin_token="t"
    )
    results: list[tuple[int, str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load(seed: int) -> None:
        body = {"instances": instances(2, seed)}
        started = time.monotonic()
        with client(live.url, timeout=30) as c:
            for _ in range(MAX_REQUESTS):
                if stop.is_set() or time.monotonic() - started > MAX_SECONDS:
                    return
                try:
                    r = c.post("/v1/models/m:predict", json=body)
                except Exception as exc:  # a refused or cut connection is a failed request too
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                    continue
                out = r.json()
                results.append((r.status_code, out["model_version"], out["predictions"]))

    with LiveServer(app) as live, client(live.url) as admin:
        wait_until(lambda: admin.get("/readyz").status_code == 200, 20)
        threads = [threading.Thread(target=load, args=(i,)) for i in range(LOAD_THREADS)]
        for t in threads:
            t.start()

        def serving(version: int) -> bool:
            seen = len(results)
            wait_until(lambda: len(results) > seen + LOAD_THREADS, 20, "the load stalled")
            return results[-1][1] == str(version)

        swaps = rollbacks = 0
        champion = 1
        for i in range(SWAPS):
            target = versions[(champion % len(versions))]  # the next version, round the ring
            if i % 2 == 0:  # through the admin route: this replica switches before answering
                r = admin.post("/admin/models/m/promote", json={"version": target}, headers=AUTH)
                assert r.status_code == 200, r.text
            else:  # straight in the store, as another replica or the controller would: the poller follows
                store.registry.promote("m", target, actor="test")
            wait_until(lambda t=target: serving(t), 20, f"v{target} never answered")
            champion, swaps = target, swaps + 1
            if swaps % (SWAPS // ROLLBACKS) == 0:
                r = admin.post("/admin/models/m/rollback", json={"scope": "champion"}, headers=AUTH)
                assert r.status_code == 200, r.text
                back = r.json()["champion"]
                wait_until(lambda b=back: serving(b), 20, f"rollback to v{back} never answered")
                champion, rollbacks = back, rollbacks + 1
        stop.set()
        for t in threads:
            t.join(60)

    assert (swaps, rollbacks) == (SWAPS, ROLLBACKS)
    assert failures == []
    assert len(results) > 10 * (SWAPS + ROLLBACKS)
    # Every response was produced entirely by the version it names.
    assert all(preds == [float(version)] * 2 for _, version, preds in results)
    assert {v for _, v, _ in results} == {"1", "2", "3", "4"}
    moves = [m for m in store.registry.history("m", "champion") if m.outcome == "applied"]
    assert sum(m.action == "rollback" for m in moves) == ROLLBACKS
