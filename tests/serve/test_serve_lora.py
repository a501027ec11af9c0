"""LoRA end to end: train -> register -> gate -> serve text over KServe V1 -> hot swap under load
with no failed request -> canary between two adapters on one base -> promotion -> rollback."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from servekit import LiveServer, client, wait_until

from evertrain.data.tickets import make_support_tickets
from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec, Spec
from evertrain.store import Store
from evertrain.store.bases import LOADS
from evertrain.train.pipeline import train_model
from lorakit import lora_trainer, text_project

pytest.importorskip("peft")
MAX_SECONDS = 120.0


def _spec(base: Path) -> Spec:
    return text_project(
        "tickets",
        lora_trainer(base, warm_start=True, epochs=2, max_length=40),
        window={"kind": "sliding", "rows": 360},
        gates=[
            {"kind": "threshold", "metric": "accuracy", "min": 0.6},
            {"kind": "non_inferiority", "metric": "f1", "margin": 0.05},
        ],
    )


def _artifact_files(project: Path) -> set[Path]:
    return {
        p for p in (project / ".evertrain" / "artifacts").rglob("*") if p.is_file() and "sha256" in p.parts
    }


def test_lora_train_gate_serve_swap_canary_promote_rollback(
    tiny_base: Path, project: Path, project_store: Store, clock: Any
) -> None:
    store, spec = project_store, _spec(tiny_base)
    (project / "evertrain.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    rows = make_support_tickets(1000, seed=11, change_at=500)
    rows[:500].to_csv(project / "tickets.csv", index=False)
    clock.now = float(rows["label_ts"][:500].max()) + 1.0

    first = train_model(store, spec, project, reason="first")
    assert first.outcome == "accepted", first.report
    mv1 = store.registry.get_version("tickets", 1)
    assert mv1.framework == "lora" and mv1.size_bytes < 200_000
    base = mv1.params["base_model_sha256"]
    assert store.artifacts.exists(base)  # the base's manifest, stored beside the adapter
    lineage = store.lineage.of_version("tickets", 1)
    assert lineage["base_model"]["sha256"] == base and lineage["base_model"]["tokenizer_sha256"]
    store.registry.promote("tickets", 1, actor="test")
    stored = _artifact_files(project)

    # Fresh tickets with new products and a new intent: continued fine-tuning from the champion.
    rows.to_csv(project / "tickets.csv", index=False)
    clock.now = float(rows["label_ts"].max()) + 1.0
    second = train_model(store, spec, project, reason="new intent")
    mv2 = store.registry.get_version("tickets", 2)
    assert mv2.params["base_model_sha256"] == base and mv2.parent == 1
    assert mv2.params["warm_start_classes"] == 4
    report = second.report
    assert report is not None and report["champion_version"] == 1 and len(report["checks"]) == 2, report
    # The champion knows neither the new intent nor the new products; the paired test sees it.
    metrics = report["metrics"]
    assert report["passed"] and metrics["challenger"]["f1"] > metrics["champion"]["f1"] + 0.2, metrics
    added = _artifact_files(project) - stored
    base_files = {store.artifacts.path(base)}
    assert not {str(p) for p in added} & base_files  # the base is stored once
    assert all(p.stat().st_size < 200_000 for p in added if "sha256" in p.parts and p.suffix == "")

    app = create_app(store, spec, serving=ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.2)))
    texts = list(rows["text"][500:520])
    failures: list[str] = []
    answers: list[tuple[str, list[Any]]] = []
    stop = threading.Event()

    def load() -> None:
        started = time.monotonic()
        with client(live.url, timeout=30) as c:
            while not stop.is_set() and time.monotonic() - started < MAX_SECONDS:
                try:
                    r = c.post(
                        "/v1/models/tickets:predict", json={"instances": [{"text": t} for t in texts[:4]]}
                    )
                except Exception as exc:  # a refused or cut connection is a failed request too
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                    continue
                answers.append((r.json()["model_version"], r.json()["predictions"]))

    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60)
        r = c.post("/v1/models/tickets:predict", json={"instances": [{"text": t} for t in texts]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "1" and set(body["predictions"]) <= set(rows["intent"][:500])
        refused = c.post("/v1/models/tickets:predict", json={"instances": [{"words": "hello"}]})
        assert refused.status_code == 422 and "text" in refused.text, refused.text

        worker = threading.Thread(target=load)
        worker.start()
        try:
            wait_until(lambda: len(answers) >= 3, 60)
            store.registry.promote("tickets", 2, actor="test")  # hot swap under load
            wait_until(lambda: any(v == "2" for v, _ in answers[-3:]), 60, "version 2 never answered")
            store.registry.set_alias("tickets", "canary", 1, actor="test")
            wait_until(lambda: c.get("/v1/models/tickets").json()["serving"]["canary"] == 1, 60)
            wait_until(
                lambda: {v for v, _ in answers[-40:]} == {"1", "2"},
                60,
                "canary and champion did not both answer",
            )
            store.registry.rollback("tickets", actor="test")
            wait_until(lambda: c.get("/v1/models/tickets").json()["serving"]["champion"] == 1, 60)
        finally:
            stop.set()
            worker.join(MAX_SECONDS)
    assert not failures, failures[:5]
    assert LOADS[base] == 1  # two adapters, a swap, a canary and a rollback on one base
    assert {p for v, preds in answers if v == "1" for p in preds} <= set(rows["intent"][:500])
