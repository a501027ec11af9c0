"""A controller killed at random points resumes to exactly the state of an uninterrupted run.

The victim replays the demo's stream in-process (the real controller, trainer, gates and
rollout, on a simulated clock); it is SIGKILLed 30 times at random moments and restarted
each time. Versions (their artifact hashes), aliases and the audit chain must then equal
those of a run that was never interrupted.
"""

from __future__ import annotations

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


def _start(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(project)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run_to_end(project: Path) -> None:
    proc = _start(project)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0 and "finished" in out, err[-2000:]


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
# Two full replays and 30 interrupted ones, each a fresh Python: minutes of work that a
# shared, loaded machine stretches past the suite's 300 s hang guard.
@pytest.mark.timeout(900)
def test_killed_controller_resumes_to_the_same_state(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    _run_to_end(reference)

    victim = tmp_path / "victim"
    rng = random.Random(20261129)
    landed_in_work = 0
    for _ in range(KILLS):
        proc = _start(victim)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready": imports done, the store is open
        if "finished" in line or not line:
            proc.communicate(timeout=60)
            break
        time.sleep(rng.uniform(0.0, 1.2))
        if proc.poll() is None:
            landed_in_work += 1
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)  # reaps it and closes its pipes
    _run_to_end(victim)

    assert landed_in_work >= KILLS * 2 // 3, "most kills should land while the loop was working"
    expected, got = state(reference), state(victim)
    assert got["aliases"] == expected["aliases"]
    assert got["versions"] == expected["versions"]
    assert got["audit"] == expected["audit"]
    assert main(["audit", "verify", "--project", str(victim)]) == 0
