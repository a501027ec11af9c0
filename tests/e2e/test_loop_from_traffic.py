"""A user's own project closes the loop from its served traffic, with no file edits.

``evertrain init --example churn``, ``train``, ``promote``; then ``evertrain serve`` and
``evertrain run`` as separate processes. The test is the client: it sends the project's
live rows over HTTP (their concept changes after 2,000 rows) and posts their labels
through the feedback route only. The controller must see the decay, retrain on what was
served, canary the new version and promote it. A second ``run`` is then given a worse
challenger (the stale first version, rolled out by hand) and must roll it back. Both
controllers are stopped with Ctrl-C (SIGINT): exit 130, and the next start resumes.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
BATCH = 100
#: Patience for each stage (on two busy cores a stage takes a few seconds to a few tens).
STAGE_SECONDS = 120.0


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}


def _cli(project: Path, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *argv, "--project", str(project)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0, f"evertrain {' '.join(argv)}: {done.stdout}{done.stderr}"
    return done.stdout


class Lines:
    """The output lines of a process, read by a thread, waited for by the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, traffic: Traffic, seconds: float = STAGE_SECONDS) -> str:
        """Send traffic until a line containing ``text`` comes; that line."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            traffic.send_batch()
            while True:
                try:
                    line = self._queue.get_nowait()
                except queue.Empty:
                    break
                if line is None:
                    pytest.fail("evertrain run ended early:\n" + "\n".join(self.seen))
                self.seen.append(line)
                if text in line:
                    return line
        pytest.fail(f"no line with {text!r} after {seconds:.0f}s:\n" + "\n".join(self.seen))


class Traffic:
    """A client of the server: live rows in batches to predict, their labels to feedback."""

    def __init__(self, url: str, live: Path) -> None:
        with live.open(newline="") as fh:
            self.rows = list(csv.DictReader(fh))
        self.http = httpx.Client(base_url=url, timeout=30)
        self.position = 0
        self.ids = itertools.count()
        self.versions: list[str] = []

    def send_batch(self) -> None:
        # After the file ends, its changed part comes again: the new concept stays.
        if self.position + BATCH > len(self.rows):
            self.position = 2000
        batch = self.rows[self.position : self.position + BATCH]
        self.position += BATCH
        while True:
            instances = [{k: _value(v) for k, v in row.items() if k != "churned"} for row in batch]
            ids = [f"r{next(self.ids)}" for _ in batch]
            body = {"instances": instances, "request_ids": ids}
            answer = self.http.post("/v1/models/churn:predict", json=body)
            if answer.status_code != 422:
                break
            # A row far outside what the serving version was trained on is refused, as a
            # client would see it: that row is dropped and the others are sent again.
            field = answer.json()["field"]
            assert field.startswith("instances["), answer.text
            del batch[int(field.split("[")[1].split("]")[0])]
        assert answer.status_code == 200, answer.text
        self.versions.append(answer.json()["model_version"])
        labels = [{"request_id": i, "label": int(row["churned"])} for i, row in zip(ids, batch, strict=True)]
        posted = self.http.post("/v1/models/churn:feedback", json={"labels": labels})
        assert posted.status_code == 200, posted.text
        time.sleep(0.05)


def _value(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(project: Path, *argv: str, out: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENTRY, *argv, "--project", str(project)],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_env(), "COLUMNS": "200"},
    )


def _interrupt(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C as a terminal sends it; the exit code."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Traffic]]:
    """A new churn project with its first version promoted and `evertrain serve` answering."""
    project = tmp_path / "shop"
    subprocess.run(
        [sys.executable, "-c", ENTRY, "init", str(project), "--example", "churn"], check=True, env=_env()
    )
    _cli(project, "train", "churn")
    _cli(project, "promote", "churn", "1")
    port = _free_port()
    server_log = (project / "serve.log").open("w")
    server = _start(project, "serve", "--port", str(port), out=server_log)
    traffic = Traffic(f"http://127.0.0.1:{port}", project / "data" / "churn-live.csv")
    deadline = time.monotonic() + 60
    while True:
        try:
            if traffic.http.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and server.poll() is None, "evertrain serve did not start"
        time.sleep(0.3)
    try:
        yield project, traffic
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_log.close()
        traffic.http.close()


def test_served_traffic_retrains_canaries_promotes_and_a_worse_challenger_rolls_back(
    served: tuple[Path, Traffic],
) -> None:
    project, traffic = served
    controller = _start(project, "run", "--interval", "2s")
    lines = Lines(controller)
    try:
        decided = lines.wait_for("decide   retrain", traffic)
        assert "performance: accuracy" in decided  # the concept change, seen in the labels
        trained = lines.wait_for("train    version", traffic)
        assert "trained in" in trained
        # (a first challenger may fail its gates, having seen few rows of the new concept)
        lines.wait_for("rollout started (canary)", traffic)
        promoted = lines.wait_for("PROMOTED", traffic)
    finally:
        code = _interrupt(controller)
    version = int(promoted.split("PROMOTED: v")[1].split()[0])
    assert code == 130, "\n".join(lines.seen)
    status = json.loads(_cli(project, "status", "--json"))
    assert status["models"][0]["aliases"]["champion"] == version
    # The promoted version learned from what was served: its training rows came from the log.
    lineage = json.loads(_cli(project, "lineage", "churn", str(version), "--json"))
    assert lineage["trigger"] != "manual"
    assert any("log:" in json.dumps(s) for s in lineage["snapshots"]), lineage["snapshots"]
    # The server answered with the new champion once it was promoted.
    assert str(version) in traffic.versions

    # A worse challenger: the stale first version, put in canary by hand between two runs.
    _cli(project, "rollout", "start", "churn", "1", "--reason", "the stale first version, as a test")
    again = _start(project, "run", "--interval", "2s")
    lines = Lines(again)
    try:
        rolled = lines.wait_for("ROLLED BACK", traffic)
    finally:
        code = _interrupt(again)
    assert code == 130
    assert "ROLLED BACK: v1" in rolled and "accuracy" in rolled, "\n".join(lines.seen)
    status = json.loads(_cli(project, "status", "--json"))
    assert status["models"][0]["aliases"]["champion"] == version
