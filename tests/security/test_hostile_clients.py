"""Hostile and broken clients against a real ``evertrain serve`` process on a loopback port.

One project: a champion and a canary (half the traffic) of a pipeline with a categorical
input whose encoder raises on a value it never saw. While a well-behaved client predicts
and posts labels the whole time, attackers send lone surrogates (in features, request ids
and labels), input that both arms refuse aimed at the canary with a chosen routing key,
large bodies left unfinished, bodies sent slowly, headers sent slowly, and feedback
without the token, as text, to a foreign host or with labels of the wrong type.

Measured: no 5xx anywhere; every row of the normal client in the logs (counted); no
error charged to the canary (the rollout analysis counts the error log); the normal
client answered throughout; the server's memory growth (RSS from /proc) under 150 MB.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from servekit import client, free_socket, make_store, put_snapshot, read_log, wait_until

from evertrain.store import Store
from evertrain.store.formats import get_format
from evertrain.store.metadata import model_versions, models, version_snapshots

ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
FEEDBACK_TOKEN = "labels-only-token"
MAX_RSS_GROWTH = 150 * 1024 * 1024
BODY_TIMEOUT = 2.0
HEADER_TIMEOUT = 2.0
SPEC = f"""\
model: {{name: m, task: binary, target: label}}
data: {{source: {{kind: log}}}}
rollout:
  steps: [{{share: 0.5}}]
serving:
  log: {{flush_seconds: 0.2}}
  body_timeout_seconds: {BODY_TIMEOUT}
  header_timeout_seconds: {HEADER_TIMEOUT}
  max_body_bytes_in_flight: 33554432
  allowed_hosts: ["127.0.0.1", "localhost"]
"""
SCHEMA: dict[str, Any] = {
    "columns": {
        "color": {"type": "categorical", "nullable": False, "categories": ["blue", "green", "red"]},
        "x0": {"type": "numeric", "nullable": False, "min": -4.0, "max": 4.0},
        "label": {"type": "numeric", "nullable": False, "min": 0, "max": 1},
    }
}
SURROGATE = '"\\ud800"'  # a JSON escape of a lone UTF-16 surrogate: valid JSON, not Unicode text


def _pipeline(seed: int) -> Any:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(seed)
    n = 300
    X = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], n), "x0": rng.normal(size=n)})
    y = ((X["x0"] > 0) ^ (X["color"] == "red")).astype(int)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="error"), ["color"]), remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression()).fit(X, y)


def _register(store: Store, seed: int) -> int:
    import sqlalchemy as sa

    digest = store.artifacts.put(get_format("sklearn").dumps(_pipeline(seed)))
    mv = store.registry.register("m", digest, framework="sklearn", actor="test")
    sid = put_snapshot(store, SCHEMA)
    with store.db.write() as conn:
        version_id = conn.execute(
            sa.select(model_versions.c.id)
            .join(models, models.c.id == model_versions.c.model_id)
            .where(models.c.name == "m", model_versions.c.version == mv.version)
        ).scalar_one()
        conn.execute(
            sa.insert(version_snapshots).values(version_id=version_id, snapshot_id=sid, role="train")
        )
    return mv.version


def rss(pid: int) -> int:
    """Resident memory of a process in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class Served:
    project: Path
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    statuses: list[int] = field(default_factory=list)  # every HTTP answer an attacker got

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out.decode(errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    project = tmp_path / "project"
    store = make_store(project / ".evertrain")
    champion = _register(store, 0)
    canary = _register(store, 1)
    store.registry.promote("m", champion, actor="test")
    store.registry.set_alias("m", "canary", canary, actor="test")
    store.close()
    (project / "evertrain.yaml").write_text(SPEC)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    env["EVERTRAIN_FEEDBACK_TOKEN"] = FEEDBACK_TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--project", str(project), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with client(url, timeout=5) as probe:

            def up() -> bool:
                try:
                    return probe.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, 90, "evertrain serve did not become ready")
        yield Served(project, url, port, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


VALID = {"color": "green", "x0": 0.5}


def _post(http: httpx.Client, path: str, body: bytes | str, **headers: str) -> httpx.Response:
    return http.post(
        path,
        content=body if isinstance(body, bytes) else body.encode(),
        headers={"content-type": "application/json", **headers},
    )


class NormalClient(threading.Thread):
    """Predicts one instance and posts its label, again and again, and notes every answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answered: list[str] = []
        self.labelled: list[str] = []
        self.failures: list[str] = []
        self.latencies: list[float] = []

    def run(self) -> None:
        ids = itertools.count()
        auth = {"authorization": f"Bearer {FEEDBACK_TOKEN}"}
        with client(self.url, timeout=10) as http:
            while not self.stop.is_set():
                rid = f"normal-{next(ids)}"
                started = time.perf_counter()
                try:
                    r = http.post("/v1/models/m:predict", json={"instances": [VALID], "request_ids": [rid]})
                    self.latencies.append(time.perf_counter() - started)
                    if r.status_code != 200:
                        self.failures.append(f"predict {r.status_code} {r.text[:200]}")
                        continue
                    self.answered.append(rid)
                    f = http.post(
                        "/v1/models/m:feedback",
                        json={"labels": [{"request_id": rid, "label": 1}]},
                        headers=auth,
                    )
                    if f.status_code != 200:
                        self.failures.append(f"feedback {f.status_code} {f.text[:200]}")
                        continue
                    self.labelled.append(rid)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.peak = rss(pid)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):
                return


def _canary_key(http: httpx.Client) -> str:
    """A routing key that lands on the canary, found the way an attacker would: by trying keys."""
    for i in range(200):
        key = f"attacker-{i}"
        r = http.post("/v1/models/m:predict", json={"instances": [VALID]}, headers={"x-evertrain-key": key})
        assert r.status_code == 200, r.text
        if r.headers["x-evertrain-arm"] == "canary":
            return key
    raise AssertionError("no key of 200 reached the canary at a 50% share")


def _raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing ``sock`` (``None``: still open after ``seconds``)."""
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return got


def _statuses(answers: list[bytes | None]) -> list[int]:
    return [int(a.split(b" ", 2)[1]) for a in answers if a and a.startswith(b"HTTP/1.1 ")]


def test_hostile_clients_cannot_sabotage_serving(served: Served) -> None:
    normal = NormalClient(served.url)
    peak = PeakRss(served.proc.pid)
    with client(served.url, timeout=10) as http:
        for _ in range(20):  # warm up before the baseline
            http.post("/v1/models/m:predict", json={"instances": [VALID]})
        baseline = rss(served.proc.pid)
        peak.peak = baseline
        peak.start()
        normal.start()
        statuses = served.statuses

        # 1. Lone surrogates, aimed at the canary with a key found by trying, in a feature,
        #    a request id and a label: 422 at the door, nothing reaches a model or the log.
        key = _canary_key(http)
        for _ in range(30):
            body = f'{{"instances": [{{"color": {SURROGATE}, "x0": 0.1}}]}}'
            r = _post(http, "/v1/models/m:predict", body, **{"x-evertrain-key": key})
            assert r.status_code == 422 and r.json()["field"] == "instances[0].color", r.text
            statuses.append(r.status_code)
            body = f'{{"instances": [{json.dumps(VALID)}], "request_ids": [{SURROGATE}]}}'
            r = _post(http, "/v1/models/m:predict", body)
            assert r.status_code == 422 and r.json()["field"] == "request_ids[0]", r.text
            statuses.append(r.status_code)
            body = f'{{"labels": [{{"request_id": {SURROGATE}, "label": 1}}]}}'
            r = _post(http, "/v1/models/m:feedback", body, authorization=f"Bearer {FEEDBACK_TOKEN}")
            assert r.status_code == 422, r.text
            statuses.append(r.status_code)

        # 2. Input the schema lets through but both arms' encoders refuse, sent to the canary:
        #    the input's fault, 422, charged to no arm.
        for _ in range(30):
            r = http.post(
                "/v1/models/m:predict",
                json={"instances": [{"color": "purple", "x0": 0.1}]},
                headers={"x-evertrain-key": key},
            )
            assert r.status_code == 422, r.text
            statuses.append(r.status_code)

        # 3. Forty 8 MB bodies announced and left unfinished: only what fits the bytes in
        #    flight is taken (the rest get a 429 at once), and the taken ones time out.
        hogs = []
        for _ in range(40):
            sock = _raw(
                served.port,
                b"POST /v1/models/m:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 8000000\r\n\r\n",
            )
            with contextlib.suppress(OSError):  # refused and closed by the server already
                sock.sendall(b" " * (1 << 20))
            hogs.append(sock)
        hog_answers = [_closed_within(s, BODY_TIMEOUT + 8) for s in hogs]
        assert all(a is not None for a in hog_answers), (
            "a connection holding an unfinished body was never closed"
        )
        hog_statuses = _statuses(hog_answers)
        assert set(hog_statuses) <= {408, 429}, hog_statuses
        statuses.extend(hog_statuses)
        for s in hogs:
            s.close()

        # 4. 300 bodies sent slowly (a few bytes, then nothing): each answered 408 and closed.
        slow = [
            _raw(
                served.port,
                b"POST /v1/models/m:feedback HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + b"Content-Type: application/json\r\n"
                + f"Authorization: Bearer {FEEDBACK_TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode()
                + b'{"labels": [',
            )
            for _ in range(300)
        ]
        slow_answers = [_closed_within(s, BODY_TIMEOUT + 8) for s in slow]
        assert all(a is not None for a in slow_answers), "a slow sender's connection was never closed"
        slow_statuses = _statuses(slow_answers)
        assert set(slow_statuses) == {408}, set(slow_statuses)
        statuses.extend(slow_statuses)
        for s in slow:
            s.close()

        # 5. 300 connections sending headers slowly, never finishing them: closed.
        headers_only = [
            _raw(served.port, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: 127.") for _ in range(300)
        ]
        answers = [_closed_within(s, HEADER_TIMEOUT + 8) for s in headers_only]
        assert all(a is not None for a in answers), "a connection that never finished its headers stayed open"
        for s in headers_only:
            s.close()

        # The normal client went on being answered all along.
        normal.stop.set()
        normal.join(30)
        peak.stop.set()
        peak.join(5)

    growth = peak.peak - baseline
    assert not normal.failures, normal.failures[:5]
    assert len(normal.answered) >= 10, len(normal.answered)
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert growth < MAX_RSS_GROWTH, f"server memory grew by {growth / 2**20:.0f} MB"
    latencies = sorted(normal.latencies)
    print(
        f"\nnormal client: {len(latencies)} requests, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms; server RSS growth {growth / 2**20:.1f} MB"
    )

    # No row lost: every request and label the normal client had answered 200 is in the logs.
    output = served.stop()
    assert served.proc.returncode == 0, output[-2000:]
    store = Store(
        f"sqlite:///{served.project / '.evertrain' / 'evertrain.db'}",
        str(served.project / ".evertrain" / "artifacts"),
        logs_url=str(served.project / ".evertrain" / "logs"),
    ).open()
    try:
        predictions = read_log(store, "predictions", "m")
        feedback = read_log(store, "feedback", "m")
        errors = read_log(store, "errors", "m")
    finally:
        store.close()
    logged = set(predictions["request_id"])
    assert set(normal.answered) <= logged, f"{len(set(normal.answered) - logged)} prediction rows lost"
    labelled = set(feedback["request_id"])
    assert set(normal.labelled) <= labelled, f"{len(set(normal.labelled) - labelled)} label rows lost"
    assert feedback["label"].dtype == np.float64  # one label type in the log
    # No arm was charged for what the attackers sent: the canary has no error to be vetoed by.
    assert errors.empty or not (errors["arm"] == "canary").any(), errors.to_dict("records")[:3]


def test_feedback_has_its_own_door(served: Served) -> None:
    with client(served.url, timeout=10) as http:
        rid = http.post("/v1/models/m:predict", json={"instances": [VALID]}).json()["request_ids"][0]
        good = json.dumps({"labels": [{"request_id": rid, "label": 1}]})
        auth = {"authorization": f"Bearer {FEEDBACK_TOKEN}"}
        # No token, or the wrong one: 401.
        assert _post(http, "/v1/models/m:feedback", good).status_code == 401
        assert _post(http, "/v1/models/m:feedback", good, authorization="Bearer nope").status_code == 401
        # A web page's simple request (text/plain, a form): 415, so no page can post labels.
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            r = http.post("/v1/models/m:feedback", content=good, headers={**auth, "content-type": media})
            assert r.status_code == 415, (media, r.text)
        # A foreign Host (DNS rebinding): 400; health still answers any host.
        r = _post(http, "/v1/models/m:feedback", good, host="evil.example", **auth)
        assert r.status_code == 400 and r.json()["field"] == "host"
        assert http.get("/healthz", headers={"host": "10.0.0.7:8080"}).status_code == 200
        # Labels typed by the task and classes (binary, classes 0 and 1 from the snapshot).
        for bad in ("yes", 7, 0.5, None, [1]):
            body = json.dumps({"labels": [{"request_id": rid, "label": bad}]})
            r = _post(http, "/v1/models/m:feedback", body, **auth)
            assert r.status_code == 422 and r.json()["field"] == "labels[0].label", (bad, r.text)
        assert _post(http, "/v1/models/m:feedback", good, **auth).json() == {"accepted": 1}
        # The model status shows no path of the server's disk.
        status = http.get("/v1/models/m").text
        assert str(served.project) not in status
