"""The dashboard on a large store: /ui render time, and predict's latency while 4 clients poll it.

A project with one served model (LightGBM on 8 features, as ``serve.py``)
gets RUNS runs written straight into its store: cycles with full monitoring results (8
drifting columns, realized and estimated performance, decisions, trainings of which
one in ten failed, gates, rollout ticks), their step and decision runs, and the
trainings. ``evertrain serve`` (which mounts the dashboard at /ui) runs in its own
process; this script

- starts the server STARTS times and loads /ui once after each start (the first load: the
  server made the page as it started), then once more after a run finished (the page made
  anew: the store's queries compiled, nothing else kept), then 20 times more (later loads);
- measures the poll the page makes every few seconds when nothing changed, and its
  refresh right after a run finished (the sections that changed, and all of them);
- runs one-instance predict requests over 4 keep-alive connections in windows of about
  SECONDS, back to back, ROUNDS pairs of them: in one window of each pair 4 dashboard
  clients poll (each: the sections once, then its poll every POLL seconds as the page
  does, with a run finishing every FINISH_EVERY seconds, a busy controller's pace, so
  that some polls get fresh sections), in the other nothing does; the order alternates.
  It reports the median and range of the pairs' p50 slowdown, and the server's CPU time
  per predict request in each kind of window (from /proc: Linux).

The load average is printed with the figures: the machine may be shared.

    python bench/ui.py [--runs N] [--seconds S] [--rounds R] [--starts S] [--write]

``--write`` puts the figures in the ``## Dashboard`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import replace_section

from evertrain.faces.ui import POLL_SECONDS
from serve import ENTRY, FEATURES, build, free_port, load, request_bytes, wait_up

TARGET_RENDER_MS = 500.0
TARGET_P50_SLOWDOWN = 0.10
POLL = float(POLL_SECONDS)  # as often as the page polls
FINISH_EVERY = 10.0
CLIENTS = 4
CONNECTIONS = 4  # keep-alive connections of the predict load


def fill(project: Path, n_runs: int) -> int:
    """Write about ``n_runs`` runs of model ``m`` into the project's store; returns how many."""
    import sqlalchemy as sa

    from evertrain.store import Store
    from evertrain.store.metadata import models, runs

    store = Store.for_project(project).open()
    rng = random.Random(0)
    with store.db.read() as conn:
        mid = conn.execute(sa.select(models.c.id).where(models.c.name == "m")).scalar()
    per_cycle = 10  # cycle, decision, monitor/decide/train/gate/rollout steps, training, evaluation, spare
    n_cycles = n_runs // per_cycle
    t0 = time.time() - n_cycles * 3600.0
    rows = []
    for n in range(1, n_cycles + 1):
        at = t0 + n * 3600.0
        drifted = rng.random() < 0.1
        retrain = drifted or rng.random() < 0.05
        failed = retrain and rng.random() < 0.1
        cols = {
            f: {
                "method": "ks+wasserstein",
                "statistic": rng.random() * 0.1,
                "p_value": rng.random(),
                "effect_size": rng.random() * (0.4 if drifted else 0.08),
                "drifted": drifted and i < 3,
            }
            for i, f in enumerate(FEATURES)
        }
        result = {
            "cycle": n,
            "at": at,
            "monitor": {
                "status": "ok",
                "champion": 1,
                "n_rows": 1000,
                "window": [at - 3600.0, at],
                "reference": "0" * 64,
                "drift": {
                    "share_drifted": 3 / 8 if drifted else 0.0,
                    "drifted_columns": FEATURES[:3] if drifted else [],
                    "dataset_drift": drifted,
                    "columns": cols,
                },
                "realized": {
                    "metric": "accuracy",
                    "value": None if rng.random() < 0.1 else 0.8 + rng.random() * 0.1,
                    "parts": [0.8, 0.85],
                    "n_labels": 400,
                    "baseline": 0.86,
                    "since": at - 7200.0,
                },
                "estimated": {
                    "metric": "roc_auc",
                    "value": 0.85,
                    "lower": 0.8,
                    "upper": 0.9,
                    "baseline": 0.86,
                },
            },
            "decide": {
                "action": "retrain" if retrain else "none",
                "reasons": ["drift: x0, x1, x2 drifted for 2 windows"] if retrain else [],
                "held": [],
                "triggers": ["drift"] if retrain else [],
            },
            "train": {"status": "failed", "error": "ValueError: no rows in the window"}
            if failed
            else ({"status": "trained", "version": 1} if retrain else {"status": "skipped"}),
            "gate": {
                "status": "failed" if retrain and not failed else "skipped",
                "version": 1,
                "reason": "worse",
            },
            "rollout": {"action": "idle"},
        }
        cycle_id = uuid.uuid4().hex
        base = {"model_id": mid, "metrics": {}, "started_at": at, "ended_at": at + 5, "heartbeat_at": at}
        rows.append(
            dict(
                base,
                id=cycle_id,
                key=f"m/cycle/{n}",
                kind="cycle",
                status="succeeded",
                parent_id=None,
                params={"cycle": n, "at": at, "interval": 3600.0},
                result=result,
                error=None,
                created_at=at,
            )
        )
        rows.append(
            dict(
                base,
                id=uuid.uuid4().hex,
                key=f"m/cycle/{n}/decision",
                kind="decision",
                status="succeeded",
                parent_id=cycle_id,
                params={},
                result=result["decide"],
                error=None,
                created_at=at + 1,
            )
        )
        for k, step in enumerate(("monitor", "decide", "train", "gate", "rollout", "evaluate")):
            bad = failed and step == "train"
            rows.append(
                dict(
                    base,
                    id=uuid.uuid4().hex,
                    key=f"m/cycle/{n}/{step}",
                    kind="step",
                    status="failed" if bad else "succeeded",
                    parent_id=cycle_id,
                    params={"step": step},
                    result=None if bad else {"status": "ok"},
                    error="ValueError: no rows" if bad else None,
                    created_at=at + 1 + k * 0.1,
                )
            )
        rows.append(
            dict(
                base,
                id=uuid.uuid4().hex,
                key=f"m/cycle/{n}/training",
                kind="train",
                status="failed" if failed else "succeeded",
                parent_id=cycle_id,
                params={},
                result=None,
                error="ValueError: no rows in the window" if failed else None,
                created_at=at + 2,
            )
        )
        rows.append(
            dict(
                base,
                id=uuid.uuid4().hex,
                key=None,
                kind="evaluation",
                status="succeeded",
                parent_id=cycle_id,
                params={},
                result={},
                error=None,
                created_at=at + 3,
            )
        )
    with store.db.write() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(sa.insert(runs), rows[i : i + 1000])
    store.close()
    return len(rows)


def get(port: int, path: str) -> tuple[float, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    took = time.perf_counter() - start
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"{path} answered {r.status}: {body[:200]!r}")
    return took, body


def start_server(project: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--project", str(project), "--port", str(port)], env=env
    )
    wait_up(port, "/readyz", proc)
    return proc, port


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def finisher(project: Path, stop: threading.Event, active: Any) -> None:
    """A run finishing every FINISH_EVERY seconds (a busy controller's steps), so some polls get news."""
    from evertrain.store import Store

    store = Store.for_project(project).open()
    try:
        while not stop.wait(FINISH_EVERY):
            if active.is_set():
                run = store.runs.start("step", model="m", params={"bench": True})
                store.runs.finish(run.id, "succeeded", result={})
    finally:
        store.close()


def poller(port: int, stop: threading.Event, active: Any, counts: list[int]) -> None:
    """One page polling as dashboard.js does: its fingerprint and the digests of the sections it shows."""
    _, first = get(port, "/ui/api/models/m/sections")
    got = json.loads(first)
    fingerprint, digests = got["fingerprint"], got["digests"]
    while not stop.wait(POLL):
        if not active.is_set():
            continue
        have = ",".join(f"{k}:{v}" for k, v in digests.items())
        _, body = get(port, f"/ui/api/models/m/sections?since={quote(fingerprint)}&have={have}")
        got = json.loads(body)
        fingerprint = got["fingerprint"]
        digests = got.get("digests", digests)
        counts[0 if got["unchanged"] else 1] += 1


def dashboard_clients(port: int, project: Path, stop: Any, active: Any, counts: Any) -> None:
    """CLIENTS pollers and the run finisher, in a process of their own (their JSON parsing must not
    slow the load generator down, only the server); they work while ``active`` is set."""
    local = [0, 0]
    halt = threading.Event()
    threads = [threading.Thread(target=poller, args=(port, halt, active, local)) for _ in range(CLIENTS)]
    threads.append(threading.Thread(target=finisher, args=(project, halt, active)))
    for t in threads:
        t.start()
    stop.wait()
    halt.set()
    for t in threads:
        t.join()
    counts[0] += local[0]
    counts[1] += local[1]


def finish_run(project: Path) -> None:
    """A step run starts and finishes in the store, as the controller's do."""
    from evertrain.store import Store

    store = Store.for_project(project).open()
    try:
        run = store.runs.start("step", model="m", params={"bench": True})
        store.runs.finish(run.id, "succeeded", result={})
    finally:
        store.close()


def after_changes(port: int, project: Path, digests: dict[str, str]) -> tuple[list[float], list[float]]:
    """Times (ms) of the page's refresh right after a run finished: as the page asks (the sections it
    holds named, so only those that changed come back) and with every section; 10 of each."""
    from evertrain.store import Store

    store = Store.for_project(project).open()
    changed: list[float] = []
    full: list[float] = []
    try:
        for k in range(20):
            run = store.runs.start("step", model="m", params={"bench": True})
            store.runs.finish(run.id, "succeeded", result={})
            if k % 2 == 0:
                have = ",".join(f"{sid}:{d}" for sid, d in digests.items())
                took, body = get(port, f"/ui/api/models/m/sections?have={have}")
                digests = json.loads(body)["digests"]
                changed.append(took * 1000)
            else:
                full.append(get(port, "/ui/api/models/m/sections")[0] * 1000)
    finally:
        store.close()
    return changed, full


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) the process ``pid`` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}" if len(values) > 1 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each predict window (from the warm-up's rate)"
    )
    parser.add_argument("--rounds", type=int, default=12, help="pairs of predict windows, alone and polled")
    parser.add_argument("--starts", type=int, default=5, help="server starts, each measuring one first load")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in rng.normal(size=(500, len(FEATURES)))]
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        project, _ = build(folder)
        written = fill(project, args.runs)
        print(f"store filled with {written} runs")
        cold: list[float] = []
        cold_changed: list[float] = []
        for k in range(args.starts):
            proc, port = start_server(project)
            try:
                took, page = get(port, "/ui")
                assert b'id="timeline"' in page
                cold.append(took * 1000)
                finish_run(project)  # the page made at start is out of date: the next load makes it anew
                cold_changed.append(get(port, "/ui")[0] * 1000)
            except BaseException:
                stop_server(proc)
                raise
            if k < args.starts - 1:
                stop_server(proc)  # the last one serves the rest
        try:
            print("/ui first loads (ms):", " ".join(f"{c:.0f}" for c in cold))
            print("/ui first loads after a change (ms):", " ".join(f"{c:.0f}" for c in cold_changed))
            warm = [get(port, "/ui")[0] * 1000 for _ in range(20)]
            _, first = get(port, "/ui/api/models/m/sections")
            fp = json.loads(first)["fingerprint"]
            unchanged = [
                get(port, f"/ui/api/models/m/sections?since={quote(fp)}")[0] * 1000 for _ in range(20)
            ]
            changed, full = after_changes(port, project, json.loads(first)["digests"])
            requests = request_bytes(port, "/v1/models/m:predict", bodies)
            rate, _ = load(port, requests, CONNECTIONS, 800)  # warm up, and the rate that sizes a round
            n = max(CONNECTIONS, int(rate * args.seconds) // CONNECTIONS * CONNECTIONS)
            alone: list[float] = []
            polled: list[float] = []
            cpu_alone: list[float] = []
            cpu_polled: list[float] = []
            counts = multiprocessing.Array("i", 2)
            stop, active = multiprocessing.Event(), multiprocessing.Event()
            clients = multiprocessing.Process(
                target=dashboard_clients, args=(port, project, stop, active, counts)
            )
            clients.start()
            try:
                for r in range(args.rounds):
                    # Short windows, back to back, the clients polling in every other one (the order
                    # alternating): the shared machine's own load moves slowly and reaches both alike.
                    for polling in (False, True) if r % 2 == 0 else (True, False):
                        if polling:
                            active.set()
                        else:
                            active.clear()
                        before = cpu_seconds(proc.pid)
                        _, lat = load(port, requests, CONNECTIONS, n)
                        (polled if polling else alone).append(float(np.percentile(lat, 50)) * 1000)
                        used = (cpu_seconds(proc.pid) - before) / len(lat) * 1e6  # µs per predict
                        (cpu_polled if polling else cpu_alone).append(used)
                    print(
                        f"round: p50 {alone[-1]:.2f} ms alone, {polled[-1]:.2f} ms polled; server CPU "
                        f"{cpu_alone[-1]:.0f} µs a request alone, {cpu_polled[-1]:.0f} µs polled"
                    )
            finally:
                stop.set()
                clients.join(timeout=120)
        finally:
            stop_server(proc)
    load_after = os.getloadavg()
    slowdowns = [b / a - 1 for a, b in zip(alone, polled, strict=True)]
    figures = {
        "runs": written,
        "requests": n,
        "cold_ms": statistics.median(cold),
        "cold_spread": spread(cold),
        "cold_changed_ms": statistics.median(cold_changed),
        "cold_changed_spread": spread(cold_changed),
        "warm_ms": statistics.median(warm),
        "warm_spread": spread(warm),
        "unchanged_ms": statistics.median(unchanged),
        "changed_ms": statistics.median(changed),
        "changed_spread": spread(changed),
        "full_ms": statistics.median(full),
        "full_spread": spread(full),
        "p50_alone": statistics.median(alone),
        "p50_polled": statistics.median(polled),
        "slowdown": statistics.median(slowdowns),
        "slowdown_min": min(slowdowns),
        "slowdown_max": max(slowdowns),
        "cpu_alone": statistics.median(cpu_alone),
        "cpu_polled": statistics.median(cpu_polled),
        "cpu_extra": statistics.median(b / a - 1 for a, b in zip(cpu_alone, cpu_polled, strict=True)),
        "polls_unchanged": counts[0],
        "polls_fresh": counts[1],
        "load_before": load_before[0],
        "load_after": load_after[0],
    }
    print(json.dumps(figures, indent=2))
    if args.write:
        write(figures, args)


def write(f: dict[str, Any], args: argparse.Namespace) -> None:
    import fastapi
    import uvicorn

    shared = max(f["load_before"], f["load_after"]) > 1.0
    busy = (
        ": the machine was shared with other work, so a window's p50 moves by tens of percent with "
        "the others' load whether the dashboard polls or not; the median over the pairs and the CPU "
        "time per request are the figures to compare, and repeat runs still move them.\n"
        if shared
        else ".\n"
    )
    section = f"""## Dashboard

`bench/ui.py --runs {args.runs} --seconds {args.seconds:g} --rounds {args.rounds} --starts {args.starts}`,
{time.strftime("%Y-%m-%d", time.gmtime())}: `evertrain serve` with the dashboard at `/ui`, on a SQLite
store holding {int(f["runs"]):,} runs of one model ({int(f["runs"]) // 10:,} cycles with full monitoring
results, their steps, decisions and trainings, a tenth of the retrains failed). Times are over HTTP from
a client on the same machine; medians, with the range of the repeats.

| what | median | range | target |
|---|---:|---:|---:|
| `/ui`, first load after a server start, which made the page as it started ({args.starts} starts) \
| {f["cold_ms"]:.0f} ms \
| {f["cold_spread"]} ms | under {TARGET_RENDER_MS:.0f} ms |
| the same when a run finished after the start (the page made anew) | {f["cold_changed_ms"]:.0f} ms \
| {f["cold_changed_spread"]} ms | under {TARGET_RENDER_MS:.0f} ms |
| `/ui`, the whole page, later loads | {f["warm_ms"]:.0f} ms | {f["warm_spread"]} ms | |
| the page's poll when nothing changed | {f["unchanged_ms"]:.1f} ms | | |
| the page's poll after a run finished (the sections that changed) | {f["changed_ms"]:.0f} ms \
| {f["changed_spread"]} ms | |
| the same, all sections | {f["full_ms"]:.0f} ms | {f["full_spread"]} ms | |

Predict (LightGBM, one instance a request, {CONNECTIONS} keep-alive connections): {args.rounds} pairs of
windows of {int(f["requests"])} requests (about {args.seconds:g} s each), back to back; in one window of
each pair {CLIENTS} dashboard clients (a process of their own) poll every {POLL:g} s (the page's own rate)
and a run finishes every {FINISH_EVERY:g} s ({int(f["polls_unchanged"])} polls answered "unchanged",
{int(f["polls_fresh"])} with the sections that changed), in the other nothing does; the order alternates.
Median p50 of the windows {f["p50_alone"]:.2f} ms alone, {f["p50_polled"]:.2f} ms polled. Slowdown of
p50 within a pair: median {f["slowdown"]:+.1%} (range {f["slowdown_min"]:+.1%} to
{f["slowdown_max"]:+.1%}; target within {TARGET_P50_SLOWDOWN:.0%}). The server's CPU time per predict
request (dashboard work included), a figure the machine's other load moves less than latency: median
{f["cpu_alone"]:.0f} µs alone, {f["cpu_polled"]:.0f} µs polled ({f["cpu_extra"]:+.1%} within a pair).

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}. Load average (1 min)
{f["load_before"]:.1f} before the run and {f["load_after"]:.1f} after it{busy}
"""
    replace_section("Dashboard", section)


if __name__ == "__main__":
    main()
