"""`evertrain serve` in its own process: SIGTERM under load loses no log row and writes none twice."""

from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from servekit import classifier, client, free_socket, instances, make_store, read_log, register, wait_until

LOAD_THREADS = 4
WARM_REQUESTS = 300  # answered before the signal, so that the queue holds rows when it comes
MAX_SECONDS = 60.0
ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
SPEC = """\
model: {name: m, target: label}
data: {source: {kind: log}}
serving:
  # Nothing is written before shutdown: every row must come out of the flush that SIGTERM starts.
  log: {flush_seconds: 3600, batch_rows: 1000000}
"""


def test_sigterm_under_load_leaves_exactly_one_row_per_answered_request(tmp_path: Path) -> None:
    project = tmp_path / "project"
    store = make_store(project / ".evertrain")
    store.registry.promote("m", register(store, "m", classifier(0)), actor="test")
    store.close()
    (project / "evertrain.yaml").write_text(SPEC)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--project", str(project), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")},
    )
    url = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    counter = itertools.count()
    signalled = threading.Event()
    try:
        with client(url, timeout=5) as probe:

            def up() -> bool:
                try:
                    return probe.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, 60, "evertrain serve did not become ready")

        def load() -> None:
            started = time.monotonic()
            with client(url, timeout=10) as c:
                while time.monotonic() - started < MAX_SECONDS:
                    rid = f"r{next(counter)}"
                    try:
                        r = c.post(
                            "/v1/models/m:predict", json={"instances": instances(1), "request_ids": [rid]}
                        )
                    except httpx.TransportError:
                        if signalled.is_set():
                            return  # the server is going away: a refused request was never answered
                        continue
                    if r.status_code == 200:
                        answered.extend(r.json()["request_ids"])

        threads = [threading.Thread(target=load) for _ in range(LOAD_THREADS)]
        for t in threads:
            t.start()
        wait_until(lambda: len(answered) >= WARM_REQUESTS, 60, "the load never got going")
        proc.send_signal(signal.SIGTERM)
        signalled.set()
        for t in threads:
            t.join(MAX_SECONDS)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    store = make_store(project / ".evertrain")
    log = read_log(store, "predictions", "m")
    store.close()
    rows = collections.Counter(log["request_id"])
    assert len(answered) >= WARM_REQUESTS
    assert [rid for rid, n in rows.items() if n > 1] == []
    assert set(rows) == set(answered)
    assert len(log) == len(answered)
