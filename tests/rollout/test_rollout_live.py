"""Rollouts against a live server: labels decide, the controller ticks, replicas follow the store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from servekit import FakeClock, LiveServer, classifier, client, instances, register, true_label, wait_until

from evertrain.rollout import advance, start_rollout
from evertrain.serve import create_app
from evertrain.spec import AnalysisSpec, LogSpec, RolloutSpec, RolloutStep, ServingSpec
from evertrain.store import Store

PLAN = RolloutSpec(
    steps=[
        RolloutStep(share=0.3, duration=60, min_samples=30),
        RolloutStep(share=0.6, duration=60, min_samples=30),
    ],
    # Latency is judged in its own tests; on two shared cores it is noise here. A promotion
    # needs the labels to show the canary is not worse by more than the margin: with a few
    # dozen labels per arm per step, a 10-point margin is what they can show.
    analysis=AnalysisSpec(min_labels=25, max_latency_increase=10.0, require_labels=True, quality_margin=0.1),
    watch_after_promotion=0,
)
REQUESTS_PER_STEP = 200


def drive(c: object, server: object, clock: FakeClock, seed: int) -> None:
    """One step's traffic: predictions for many users, then the true labels for all of them."""
    rows = instances(REQUESTS_PER_STEP, seed)
    labels = []
    for i, row in enumerate(rows):
        r = c.post(
            "/v1/models/m:predict", json={"instances": [row]}, headers={"x-evertrain-key": f"u{seed}-{i}"}
        )
        assert r.status_code == 200
        labels.append({"request_id": r.json()["request_ids"][0], "label": true_label(row)})
    assert c.post("/v1/models/m:feedback", json={"labels": labels}).status_code == 200
    assert server.flush()
    clock.advance(61)


def serving(c: object) -> dict:
    return c.get("/v1/models/m").json()["serving"]


def test_an_equivalent_canary_is_promoted_and_a_worse_one_rolled_back(store: Store, clock: FakeClock) -> None:
    v1 = register(store, "m", classifier(0))
    v2 = register(store, "m", classifier(1))  # trained on other rows: as good
    v3 = register(store, "m", classifier(0, inverted=True))  # learned the opposite: worse
    store.registry.promote("m", v1, actor="test")
    app = create_app(
        store, clock=clock, serving=ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.1))
    )
    server = app.state.server
    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20)

        start_rollout(store, "m", v2, actor="controller", rollout_spec=PLAN, task="binary")
        wait_until(lambda: serving(c)["canary"] == v2, 20)
        assert c.get("/v1/models/m").json()["canary_share"] == 0.3
        drive(c, server, clock, seed=1)
        d = advance(store, "m", actor="controller")
        assert d.action == "advance", d.reasons
        wait_until(lambda: c.get("/v1/models/m").json()["canary_share"] == 0.6, 20)
        drive(c, server, clock, seed=2)
        d = advance(store, "m", actor="controller")
        assert (d.action, d.rollout.outcome) == ("promote", "promoted"), d.reasons
        wait_until(lambda: serving(c) == {"champion": v2, "canary": None, "shadow": None}, 20)

        start_rollout(store, "m", v3, actor="controller", rollout_spec=PLAN, task="binary")
        wait_until(lambda: serving(c)["canary"] == v3, 20)
        drive(c, server, clock, seed=3)
        d = advance(store, "m", actor="controller")
        assert (d.action, d.rollout.outcome) == ("rollback", "rolled_back"), d.reasons
        assert "accuracy" in " ".join(d.reasons)
        wait_until(lambda: serving(c) == {"champion": v2, "canary": None, "shadow": None}, 20)

    log = pd.concat(
        [pd.read_parquet(p) for p in sorted(Path(store.logs_url or "").glob("predictions/*/*/*.parquet"))]
    )
    assert set(log.loc[log["arm"] == "canary", "model_version"]) == {v2, v3}
    # Each step's traffic (one fake-clock instant) went to the canary at about the step's share.
    shares = (log["arm"] == "canary").groupby(log["ts"]).mean().to_numpy()
    assert 0.15 < shares[0] < 0.45 and 0.45 < shares[1] < 0.75
