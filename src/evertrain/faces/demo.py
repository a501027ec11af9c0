"""``evertrain demo``: the whole loop on a bundled drifting stream, offline, in minutes.

A simulated production: a seeded stream in four phases (stable, covariate shift,
abrupt concept change, gradual drift; see :mod:`evertrain.data.streams`) is served
batch by batch through the real HTTP app on a loopback port; labels arrive late (the
spec's label delay) as feedback, and the labelled rows land in an offline "warehouse"
folder that training reads. After every batch the controller runs one cycle on a
simulated clock. Partway through the gradual phase the warehouse's feature pipeline
starts writing x1 with the opposite sign, a skew that only live traffic reveals.

The scenarios (the stream, its project file, the rainfall data) are in
:mod:`evertrain.faces.demo_scenarios`; this module runs one. The folder it leaves is a
normal project: every other command works on it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evertrain.controller.clock import ManualClock
from evertrain.controller.replay import Replay
from evertrain.controller.results import CycleSummary
from evertrain.data.streams import FEATURES
from evertrain.exceptions import UsageError
from evertrain.faces.demo_scenarios import (
    BATCH_SECONDS,
    Scenario,
    llm_scenario,
    rainfall_scenario,
    synthetic_scenario,
    write_project,
)
from evertrain.spec import load_spec
from evertrain.store import Store

START = 1767571200.0  # 2026-01-05 00:00 UTC, a Monday
REQUEST_ROWS = 10  # instances per predict request: routing is per request, so small requests split
# the traffic between champion and canary finely, as real traffic of a few rows per request does
FEEDBACK_ROWS = 500  # labels per feedback request


@dataclass
class DemoRecord:
    accuracy_per_batch: list[float] = field(default_factory=list)  # of the batches a model served
    accuracy_by_cycle: list[float | None] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)


def make_replay(
    out: Path, scenario: Scenario, clock: ManualClock, store: Store, cls: type[Replay] = Replay, **kwargs: Any
) -> Replay:
    """The replay of ``scenario`` into the project ``out`` (in-process, or over HTTP with ``cls``)."""
    return cls(
        store=store,
        spec=load_spec(out),
        project=out,
        source=scenario.source,
        clock=clock,
        start=START,
        batch_seconds=BATCH_SECONDS,
        label_delay_batches=scenario.label_delay_batches,
        warm_batches=scenario.warm_batches,
        **kwargs,
    )


@dataclass
class HttpReplay(Replay):
    """The replay with the real HTTP app in front: predictions and feedback go over loopback."""

    client: httpx.Client | None = None
    server: Any = None
    served_batches: set[int] = field(default_factory=set)

    def serve(self, index: int) -> float | None:
        assert self.client is not None and self.server is not None
        self.server.manager.refresh()
        name, target = self.spec.model.name, self.spec.model.target
        if self.server.manager.routes(name) is None:
            return None  # no model yet: the traffic goes unanswered
        frame = self.source.served(index)
        ids = self.request_ids(index, len(frame))
        features = frame[list(self.spec.model.features or FEATURES)].to_dict(orient="records")
        preds: list[Any] = []
        for start in range(0, len(features), REQUEST_ROWS):
            stop = start + REQUEST_ROWS
            body = {"instances": features[start:stop], "request_ids": ids[start:stop]}
            response = self.client.post(f"/v1/models/{name}:predict", json=body)
            response.raise_for_status()
            preds.extend(response.json()["predictions"])
        self.served_batches.add(index)
        truth = frame[target].to_numpy()
        # Class names (a text classifier's intents) compare as they are; numbers as floats.
        answered = np.asarray(preds, dtype=float if truth.dtype.kind in "biuf" else object)
        return float(np.mean(answered == truth))

    def was_served(self, index: int) -> bool:
        return index in self.served_batches

    def send_feedback(self, index: int, ids: list[str], labels: pd.Series, now: float) -> None:
        assert self.client is not None
        values = labels.to_numpy()
        for start in range(0, len(ids), FEEDBACK_ROWS):
            stop = start + FEEDBACK_ROWS
            payload = {
                "labels": [
                    {"request_id": rid, "label": y.item() if hasattr(y, "item") else y}
                    for rid, y in zip(ids[start:stop], values[start:stop], strict=True)
                ]
            }
            self.client.post(f"/v1/models/{self.spec.model.name}:feedback", json=payload).raise_for_status()

    def before_cycle(self) -> None:
        self.server.flush()  # the controller reads what the replicas logged


class _Server:
    """The real ASGI app under uvicorn on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the demo's HTTP server did not start")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _summarize_cycle(result: CycleSummary) -> str:
    decision = result.get("decide") or {}
    gate = result.get("gate") or {}
    rollout = result.get("rollout") or {}
    parts = []
    if decision.get("action") == "retrain":
        parts.append(f"[bold]retrain[/] ({'; '.join(decision.get('reasons', []))})")
    elif decision.get("held"):
        parts.append(f"[dim]held: {decision['held'][0]}[/]")
    if gate.get("status") in ("passed", "failed"):
        colour = "green" if gate["status"] == "passed" else "red"
        parts.append(f"[{colour}]v{gate.get('version')} gates {gate['status']}[/]")
    if rollout.get("action") and rollout.get("action") != "idle":
        parts.append(f"rollout v{rollout.get('version')}: {rollout['action']}")
    return "  ".join(parts)


def summary(store: Store, model: str, record: DemoRecord) -> dict[str, Any]:
    """OUT/summary.json: cycles, decisions with reasons, versions, gates, rollouts, accuracy per batch."""
    decisions, gates, rollouts = [], [], []
    for c in record.cycles:
        n = c.get("cycle")
        d = c.get("decide") or {}
        decisions.append(
            {
                "cycle": n,
                "action": d.get("action", "none"),
                "reasons": d.get("reasons", []),
                "held": d.get("held", []),
                "triggers": d.get("triggers", []),
            }
        )
        g = c.get("gate") or {}
        if g.get("status") in ("passed", "failed"):
            gates.append(
                {
                    "cycle": n,
                    "version": g.get("version"),
                    "passed": g["status"] == "passed",
                    "checks": g.get("checks", []),
                }
            )
        r = c.get("rollout") or {}
        if r.get("outcome"):
            rollouts.append(
                {
                    "cycle": n,
                    "version": r.get("version"),
                    "outcome": r["outcome"],
                    "reasons": r.get("reasons", []),
                }
            )
    versions = [
        {
            "version": v.version,
            "trigger": v.trigger,
            "parent": v.parent,
            "metrics": v.metrics,
            "created_at": v.created_at,
        }
        for v in store.registry.list_versions(model)
    ]
    return {
        "model": model,
        "cycles": len(record.cycles),
        "phases": record.phases,
        "decisions": decisions,
        "versions": versions,
        "gates": gates,
        "rollouts": rollouts,
        "accuracy_per_batch": record.accuracy_per_batch,
        "aliases": store.registry.get_aliases(model),
        "audit_entries": store.audit.verify().n_entries,
    }


def run_demo(
    out: Path,
    *,
    fast: bool = False,
    seed: int = 7,
    dataset: str = "synthetic",
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out`` (a fresh project folder); returns the summary it writes."""
    from evertrain.serve.app import create_app

    console = console or Console()
    if (out / ".evertrain").exists():
        raise UsageError(f"{out} already holds an evertrain store; pick a new --out folder")
    if dataset == "synthetic":
        scenario = synthetic_scenario(seed, fast)
    elif dataset == "rainfall":
        scenario = rainfall_scenario(fast)
    elif dataset == "llm":
        scenario = llm_scenario(fast)
    else:
        raise UsageError(f"unknown demo scenario {dataset!r}; known: synthetic, rainfall, llm")
    write_project(out, scenario.spec_text)
    if scenario.prepare is not None:
        scenario.prepare(out)
    clock = ManualClock(START)
    store = Store.for_project(out, clock=clock).open()
    app = create_app(store, load_spec(out), clock=clock, admin_token="")
    record = DemoRecord()
    console.print(f"[bold]evertrain demo[/]: {scenario.intro}. Project: {out}")
    began = time.monotonic()

    def show(result: dict[str, Any]) -> None:
        index, accuracy, cycle = result["batch"], result["accuracy"], result["cycle"]
        phase = scenario.phase(index)
        record.cycles.append(cycle)
        record.phases.append(phase)
        record.accuracy_by_cycle.append(None if accuracy is None else round(accuracy, 4))
        if accuracy is not None:
            record.accuracy_per_batch.append(round(accuracy, 4))
        acc_text = "-" if accuracy is None else f"{accuracy:.3f}"
        console.print(
            f"batch {index - scenario.warm_batches + 1:>2} [cyan]{phase:<9}[/] served acc {acc_text}  "
            f"{_summarize_cycle(cycle)}"
        )

    # A bar of batches and elapsed time under the batch lines, on a terminal only.
    progress = Progress(
        TextColumn("demo"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    batches = progress.add_task("batches", total=max(0, scenario.source.n_batches - scenario.warm_batches))

    def step(result: dict[str, Any]) -> None:
        show(result)
        progress.advance(batches)

    with (
        progress,
        _Server(app) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        replay = make_replay(out, scenario, clock, store, HttpReplay, client=client, server=app.state.server)
        replay.run(on_batch=step)
    data = summary(store, scenario.model, record)
    data["dataset"] = dataset
    if scenario.drift_note is not None:
        data["text_drift"] = scenario.drift_note()
        console.print(data["text_drift"])
    data["seconds"] = round(time.monotonic() - began, 1)
    (out / "summary.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    from evertrain.faces.report_html import write_report

    write_report(store, scenario.model, str(out / "report.html"), extra_accuracy=record.accuracy_by_cycle)
    _closing_table(console, data)
    console.print(f"summary: {out / 'summary.json'}  report: {out / 'report.html'}  ({data['seconds']} s)")
    store.close()
    return data


def _closing_table(console: Console, data: dict[str, Any]) -> None:
    table = Table(title="what the loop did")
    for col in ("cycle", "phase", "event", "why"):
        table.add_column(col)
    phases = data["phases"]
    for d in data["decisions"]:
        if d["action"] == "retrain":
            table.add_row(str(d["cycle"]), phases[d["cycle"] - 1], "retrain", "; ".join(d["reasons"]))
    for g in data["gates"]:
        table.add_row(
            str(g["cycle"]),
            phases[g["cycle"] - 1],
            f"v{g['version']} gates {'passed' if g['passed'] else 'FAILED'}",
            "; ".join(c.get("reason", "") for c in g["checks"] if not c.get("passed")) or "all checks",
        )
    for r in data["rollouts"]:
        table.add_row(
            str(r["cycle"]),
            phases[r["cycle"] - 1],
            f"v{r['version']} {r['outcome']}",
            "; ".join(r["reasons"]),
        )
    console.print(table)
