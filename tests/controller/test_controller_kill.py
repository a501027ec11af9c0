"""A controller killed at random points resumes to exactly the state of an uninterrupted run.

The victim replays the demo's stream in-process (the real controller, trainer, gates and
rollout, on a simulated clock); it is SIGKILLed 30 times at random moments and restarted
each time, each life a fork of one interpreter that imported everything but never opened the
store (so a life knows only what the folder holds, as a restarted process would). Versions
(their artifact hashes), aliases and the audit chain must then equal those of a run that was
never interrupted.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from evertrain.faces.cli import main
from evertrain.store import Store

CHILD = Path(__file__).with_name("_replay_child.py")
KILLS = 30
_HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


class Zygote:
    """One interpreter that imports the controller once and forks a fresh life per run."""

    def __init__(self, err: Path) -> None:
        self._err = err.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        assert self.readline() == "zygote ready", err.read_text()[-2000:]

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return line.strip()

    def fork(self, project: Path, command: str = "fork") -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command} {project}\n")
        self.proc.stdin.flush()
        pid = self.readline()
        assert pid.startswith("pid "), pid
        return int(pid.split()[1])

    def until_exit(self) -> tuple[int, list[str]]:
        """Lines of the current life up to its end, and its exit status (-9 when killed)."""
        lines = []
        while not (line := self.readline()).startswith("exit "):
            lines.append(line)
        return int(line.split()[1]), lines

    def run_to_end(self, project: Path, command: str = "fork") -> None:
        self.fork(project, command)
        status, lines = self.until_exit()
        assert status == 0 and "finished" in lines, self._err.name

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._err.close()


def state(project: Path) -> dict[str, Any]:
    """What must not depend on crashes: versions, aliases, and the audit chain's content."""
    store = Store.for_project(project).open()
    try:
        versions = [
            (
                v.version,
                v.artifact_sha256,
                v.trigger,
                v.parent,
                sorted(
                    (k, round(x, 9))
                    for k, x in v.metrics.items()
                    if "seconds" not in k and "latency" not in k
                ),
            )
            for v in store.registry.list_versions("demo")
        ]
        audit = [
            (e.seq, e.actor, e.action, _HEX_ID.sub("<id>", e.subject), e.reason)
            for e in store.audit.entries()
        ]
        return {"versions": versions, "aliases": store.registry.get_aliases("demo"), "audit": audit}
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_controller_resumes_to_the_same_state(tmp_path: Path) -> None:
    zygote = Zygote(tmp_path / "zygote.err")
    try:
        reference = tmp_path / "reference"
        started = time.monotonic()
        zygote.run_to_end(reference, "warm")  # the zygote then imports what a life needs
        # Kill delays scaled to how long the whole run takes on this machine now: 30 lives
        # cover about 0.8 of it (less their restarts), so the kills are spread over the run
        # and most land in its work however fast or slow the machine is (a fixed 0-1.2 s
        # let a quiet machine finish the run after 14 kills).
        max_delay = 1.6 * (time.monotonic() - started) / KILLS

        victim = tmp_path / "victim"
        rng = random.Random(20261129)
        landed_in_work = 0
        for _ in range(KILLS):
            pid = zygote.fork(victim)
            if zygote.readline() != "ready":  # the store could not be opened: say why
                status, lines = zygote.until_exit()
                pytest.fail(f"a life failed to start (exit {status}): {lines}")
            time.sleep(rng.uniform(0.0, max_delay))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            status, lines = zygote.until_exit()
            if status == -signal.SIGKILL:
                landed_in_work += 1
            else:
                assert status == 0 and "finished" in lines, (status, lines)
                break
        zygote.run_to_end(victim)
    finally:
        zygote.close()

    assert landed_in_work >= KILLS * 2 // 3, "most kills should land while the loop was working"
    expected, got = state(reference), state(victim)
    assert got["aliases"] == expected["aliases"]
    assert got["versions"] == expected["versions"]
    assert got["audit"] == expected["audit"]
    assert main(["audit", "verify", "--project", str(victim)]) == 0
