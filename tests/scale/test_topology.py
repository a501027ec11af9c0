"""The deployment of docs/deploy.md, as processes: PostgreSQL, an S3 server (moto), one controller,
two serving replicas started with only the store URLs, traffic with labels throughout.

Containers cannot run on the machines these tests run on, so the compose file's topology is
run here as local processes on loopback ports, talking to the same kinds of servers
(PostgreSQL over TCP, an S3 API over HTTP). On the way the inputs drift, the controller
retrains, canaries and promotes; then the S3 server is cut off for 15 s under traffic.
Afterwards: no request failed, and every row served and every label accepted is in the log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from scalekit import BUCKET, Relay, free_port, wait_for_port

from evertrain.data import logs
from evertrain.store import Store, storage
from evertrain.store.metadata import alias_history

MODEL = "scoring"
OUTAGE_SECONDS = 15.0
# The replicas flush their log rows every 2 s: each flush is a part on the S3 server, and each
# part a cycle reads (the rows since the last cycle, since a drift began, the newest window)
# costs a few requests. At 0.5 s the single-process S3 server answered them at its limit and
# the cycles after the outage took 15 to 30 s each instead of 2 to 4.
SPEC = """\
model:
  name: scoring
  task: binary
  target: y
  features: [x0, x1, x2]
  trainer: {kind: sklearn, estimator: sklearn.linear_model.LogisticRegression, seed: 0}
data:
  source: {kind: parquet, path: "s3://evertrain/warehouse/*.parquet"}
  time_column: ts
training:
  window: {kind: sliding, rows: 600}
  holdout: {fraction: 0.3}
  executor: inline
monitoring: {window_rows: 300}
triggers:
  drift: {min_labels_after: 60}
  performance: {min_labels: 60, learn_from: window}
policy: {cycle_interval: 1s, cooldown: 0s, max_retrains_per_day: 10}
rollout:
  steps: [{share: 0.5, duration: 2s, min_samples: 20}]
  analysis: {min_labels: 20}
  watch_after_promotion: 1s
serving: {poll_seconds: 0.5, log: {flush_seconds: 2}}
storage:
  logs_url: s3://evertrain/logs
  compact_every: 5
"""


def _rows(n: int, drifted: bool, rng: np.random.Generator, start: float, end: float) -> pd.DataFrame:
    """Rows of the stream; after the drift x0 moves and the concept changes (y follows x0 - x1)."""
    x = rng.normal(size=(n, 3))
    if drifted:
        x[:, 0] += 1.5
        y = (x[:, 0] - 1.5 - x[:, 1] > 0).astype(int)
    else:
        y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return pd.DataFrame(
        {"ts": np.linspace(start, end, n), "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "y": y}
    )


def _put_parquet(frame: pd.DataFrame, path: str) -> None:
    fs, _ = storage.open_fs(f"s3://{BUCKET}")
    with fs.open(f"{BUCKET}/{path}", "wb") as fh:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), fh)


class Traffic:
    """Clients of both replicas: predict requests with their own ids, and a label for each row."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.rng = np.random.default_rng(7)
        self.drifted = False
        self.served: list[str] = []
        self.labelled: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        clients = [httpx.Client(base_url=u, timeout=30) for u in self.urls]
        try:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                self._one(clients[i % len(clients)], clients[(i + 1) % len(clients)])
                time.sleep(0.05)
        finally:
            for c in clients:
                c.close()

    def _one(self, predict: httpx.Client, feedback: httpx.Client) -> None:
        rows = _rows(5, self.drifted, self.rng, 0, 0)
        ids = [f"q{next(self._ids)}" for _ in range(5)]
        body = {"instances": rows[["x0", "x1", "x2"]].to_dict("records"), "request_ids": ids}
        try:
            r = predict.post(f"/v1/models/{MODEL}:predict", json=body)
        except httpx.HTTPError as exc:
            self.failures.append(f"predict: {exc!r}")
            return
        if r.status_code != 200:
            self.failures.append(f"predict {r.status_code}: {r.text[:200]}")
            return
        self.served.extend(ids)
        labels = [{"request_id": i, "label": int(y)} for i, y in zip(ids, rows["y"], strict=True)]
        try:
            f = feedback.post(f"/v1/models/{MODEL}:feedback", json={"labels": labels})
        except httpx.HTTPError as exc:
            self.failures.append(f"feedback: {exc!r}")
            return
        if f.status_code != 200:
            self.failures.append(f"feedback {f.status_code}: {f.text[:200]}")
            return
        self.labelled.extend(ids)

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(60)


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evertrain.faces", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(what: str, check: object, timeout: float, logs_of: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs_of)
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def _metric(text: str, name: str, log: str) -> float:
    m = re.search(rf'^{name}_total{{log="{log}"}} ([0-9.e+]+)$', text, re.M)
    return float(m[1]) if m else 0.0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_controller_and_two_replicas_on_postgres_and_s3_through_drift_promotion_and_an_outage(
    s3: Relay, pg_schemas: Any, tmp_path: Path
) -> None:
    db_url = pg_schemas.new_url()
    artifacts = f"s3://{BUCKET}/artifacts"
    now = time.time()
    rng = np.random.default_rng(0)
    _put_parquet(_rows(1000, False, rng, now - 7200, now - 3600), "warehouse/part-0.parquet")
    project = tmp_path / "project"
    project.mkdir()
    (project / "evertrain.yaml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    env.update(
        {"EVERTRAIN_STORAGE_OPTIONS": os.environ["EVERTRAIN_STORAGE_OPTIONS"], "EVERTRAIN_ACTOR": "test"}
    )
    store = Store(db_url, artifacts, logs_url=f"s3://{BUCKET}/logs").open()
    try:
        _run(store, s3, db_url, artifacts, project, env, tmp_path)
    finally:
        store.close()


def _run(
    store: Store, s3: Relay, db_url: str, artifacts: str, project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    controller_env = {**env, "EVERTRAIN_DB_URL": db_url, "EVERTRAIN_ARTIFACTS_URL": artifacts}
    rng = np.random.default_rng(1)
    outputs = [tmp_path / "controller.log", tmp_path / "replica-1.log", tmp_path / "replica-2.log"]
    with _process(["run", "--project", str(project)], controller_env, project, outputs[0]) as controller:
        _wait(
            "the first version and the project file in the store",
            lambda: store.specs.current(MODEL) is not None and store.registry.get_alias(MODEL, "champion"),
            180,
            outputs[:1],
        )
        ports = [free_port(), free_port()]
        replicas = []
        with contextlib.ExitStack() as stack:
            for i, port in enumerate(ports):
                home = tmp_path / f"replica-{i + 1}"
                home.mkdir()
                # Only the store URLs: the serving settings and the logs URL come from the store.
                args = ["serve", "--db-url", db_url, "--artifacts-url", artifacts, "--port", str(port)]
                replicas.append(stack.enter_context(_process(args, env, home, outputs[i + 1])))
            for port, proc in zip(ports, replicas, strict=True):
                wait_for_port(port, timeout=180, proc=proc)
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            _wait("both replicas ready", lambda: all(_ready(u) for u in urls), 120, outputs)
            traffic = Traffic(urls).start()
            time.sleep(5)
            # The inputs drift and the concept changes; the warehouse gets the new labelled rows.
            traffic.drifted = True
            fresh = time.time()
            _put_parquet(_rows(1000, True, rng, fresh - 600, fresh), "warehouse/part-1.parquet")
            canaried: list[int] = []

            def promoted() -> bool:
                canary = store.registry.get_alias(MODEL, "canary")
                if canary:
                    canaried.append(canary)
                champion = store.registry.get_alias(MODEL, "champion") or 0
                return champion >= 2 and _cycles(store) >= 8

            _wait("a retrain, a canary and a promotion", promoted, 300, outputs)
            s3.cut()  # the object store is unreachable: serving goes on, rows wait in the spools
            cut_at = time.time()
            time.sleep(OUTAGE_SECONDS)
            s3.restore()
            outage = (cut_at, time.time())
            # the controller heals: cycles go on after the outage as before it
            healed = _cycles(store) + 3
            _wait("three controller cycles after the outage", lambda: _cycles(store) >= healed, 300, outputs)
            traffic.finish()

            seen: dict[str, list[str]] = {}

            def all_logged() -> bool:
                seen[logs.PREDICTIONS] = _read_ids(logs.PREDICTIONS)
                if not set(traffic.served) <= set(seen[logs.PREDICTIONS]):
                    return False
                seen[logs.FEEDBACK] = _read_ids(logs.FEEDBACK)
                return set(traffic.labelled) <= set(seen[logs.FEEDBACK])

            _wait("every served row and label in the log", all_logged, 120, outputs)
            metrics = [httpx.get(f"{u}/metrics").text for u in urls]
        assert controller.poll() is None, "the controller died"

    assert traffic.failures == [], traffic.failures[:5]
    # Traffic flowed the whole time (how much depends on the machine's speed, not on evertrain).
    assert len(traffic.served) > 100
    # every row served is in the prediction log exactly once; every accepted label is in the feedback log
    served = set(traffic.served)
    served_rows = [r for r in seen[logs.PREDICTIONS] if r in served]
    assert len(served_rows) == len(traffic.served) == len(set(served_rows))
    assert set(traffic.labelled) <= set(seen[logs.FEEDBACK])
    # the outage was felt and healed: rows were spooled during it and all drained after
    spooled = sum(_metric(m, "evertrain_log_spooled_rows", logs.PREDICTIONS) for m in metrics)
    drained = sum(_metric(m, "evertrain_log_drained_rows", logs.PREDICTIONS) for m in metrics)
    assert spooled > 0 and drained == spooled
    # the drift led to a canary of the new version and its promotion
    assert canaried or _alias_moved(store, "canary")
    assert (store.registry.get_alias(MODEL, "champion") or 0) >= 2
    # the controller recorded storage failures as failed steps and went on
    failed = [r for r in store.runs.list(model=MODEL, kind="step") if r.status == "failed"]
    during = [r for r in failed if outage[0] - 5 <= r.created_at <= outage[1] + 5]
    assert any("s3://" in (r.error or "") for r in during), [r.error for r in failed][:5]
    assert _cycles(store) >= healed
    # the version's lineage names the project file the replicas served with
    stored = store.specs.current(MODEL)
    assert stored is not None
    assert json.loads(stored.data)["serving"]["poll_seconds"] == 0.5


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/models/{MODEL}", timeout=5).json().get("ready") is True
    except (httpx.HTTPError, ValueError):
        return False


def _cycles(store: Store) -> int:
    return sum(1 for r in store.runs.list(model=MODEL, kind="cycle") if r.status == "succeeded")


def _read_ids(kind: str) -> list[str]:
    table = logs.read_log(f"s3://{BUCKET}/logs", kind, MODEL, columns=["request_id", "ts", "arm"])
    if table.num_rows == 0:
        return []
    if "arm" in table.column_names:
        table = table.filter(pa.compute.not_equal(table["arm"], "shadow"))
    return [str(x) for x in table["request_id"].to_pylist()]


def _alias_moved(store: Store, alias: str) -> bool:
    with store.db.read() as conn:
        rows = conn.execute(
            sa.select(alias_history.c.to_version).where(
                alias_history.c.alias == alias, alias_history.c.to_version.is_not(None)
            )
        ).all()
    return bool(rows)
