"""The online reader's worker life: a worker that dies is started again in the background, and
no read waits for that start.

The worker here stands in for Feast's (the real one, in Feast's own environment, is run by
tests/integrations/test_feast.py): a real process that speaks the same line protocol and can
be held at its start, as an import of Feast on a busy machine holds it for seconds.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evertrain.data.feast_online import Answer, OnlineFeatures
from evertrain.exceptions import StoreError, UsageError

WORKER = """
import json, os, sys, time
hold = os.environ["HOLD"]
while os.path.exists(hold):  # a slow start: Feast importing
    time.sleep(0.02)
with open(os.environ["PIDS"], "a") as f:
    f.write(f"{os.getpid()}\\n")
print(json.dumps({"keys": {"region": "string"}, "features": ["size"]}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    regions = request["entities"]["region"]
    answer = {"id": request["id"], "features": {"size": [len(r) for r in regions]}, "missing": []}
    print(json.dumps(answer), flush=True)
"""


def eventually(check: Callable[[], bool], seconds: float = 60.0) -> None:
    """Wait until ``check`` holds (a liveness bound, far above what it needs; not a timing)."""
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "never happened"
        time.sleep(0.02)


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OnlineFeatures]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    python = tmp_path / "python"  # called as `python WORKER --online CONFIG`: runs the stand-in instead
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("HOLD", str(tmp_path / "hold"))
    monkeypatch.setenv("PIDS", str(tmp_path / "pids"))
    online = OnlineFeatures(str(tmp_path), python=str(python))
    yield online
    online.close()


def pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (ended, not yet reaped) counts as ended
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def read_now(online: OnlineFeatures, regions: list[str]) -> Answer | StoreError:
    """What ``online.read`` gives or raises, from a thread: a read that hangs fails the test."""
    out: list[Answer | StoreError] = []

    def run() -> None:
        try:
            out.append(online.read({"region": regions}).result(timeout=60))
        except StoreError as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert out, "the read waited for the worker's start"
    return out[0]


def test_a_dead_worker_is_started_again_in_the_background_while_reads_fail_at_once(
    reader: OnlineFeatures, tmp_path: Path
) -> None:
    reader.start()
    answer = read_now(reader, ["east", "north"])
    assert isinstance(answer, Answer) and answer.features == {"size": [4, 5]}
    first = pids(tmp_path)[0]

    hold = tmp_path / "hold"
    hold.touch()  # the next start takes until the test lets it go
    os.kill(first, 9)
    eventually(lambda: not reader.ready)
    # each read while the worker is gone or starting fails at once, naming why; the first starts it
    for _ in range(3):
        failed = read_now(reader, ["east"])
        assert isinstance(failed, StoreError) and "starting" in failed.message
    eventually(lambda: len(pids(tmp_path)) == 1 and not alive(first))
    hold.unlink()  # the start completes
    eventually(lambda: reader.ready)
    answer = read_now(reader, ["west"])
    assert isinstance(answer, Answer) and answer.features == {"size": [4]}
    assert len(pids(tmp_path)) == 2  # one start for all those reads, not one per read


def test_a_worker_that_starts_after_close_is_stopped(reader: OnlineFeatures, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    with pytest.raises(StoreError, match="starting"):
        reader.ensure()  # starts one in the background
    reader.close()
    hold.unlink()
    eventually(lambda: len(pids(tmp_path)) == 1)
    eventually(lambda: not alive(pids(tmp_path)[0]))
    assert not reader.ready


def test_without_online_reads_the_worker_tells_the_keys_and_stops(
    reader: OnlineFeatures, tmp_path: Path
) -> None:
    """``serving.feast.online: false``: requests carry every feature, so the server needs only
    the entity keys' types; no Feast process is kept running for reads that never come."""
    online = OnlineFeatures(reader.repo, python=reader.python, resident=False)
    try:
        online.start()
        assert online.ready and online.keys_ == {"region": "string"} and online.names_ == ["size"]
        [pid] = pids(tmp_path)
        eventually(lambda: not alive(pid))
        assert online.ready  # the keys stay known
        with pytest.raises(UsageError, match="online reads are off"):
            online.read({"region": ["east"]})
    finally:
        online.close()
