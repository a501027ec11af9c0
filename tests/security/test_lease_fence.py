"""The controller lease is a fence, tested with a real paused process.

Controller A is stopped (SIGSTOP) inside its training step for longer than its lease;
controller B takes the lease over and runs the same cycle to its end; then A is resumed
(SIGCONT). Every write A tries is refused by the store, A stops cleanly, and the store
holds B's work only: one version, one finished cycle, an intact audit chain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evertrain.data.examples import write_project
from evertrain.store import Store

LEASE_TTL = 2.0
PAUSE = 8.0  # A sleeps this long in its training step (it is stopped during most of it)
CONTROLLER = """
import sys, time
from pathlib import Path
from evertrain.controller import steps as default_steps
from evertrain.controller.loop import Controller
from evertrain.spec import load_spec
from evertrain.store import Store

project, holder, pause = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
store = Store.for_project(project).open()

def train(ctx):
    print("training", flush=True)
    time.sleep(pause)
    return default_steps.STEP_FUNCTIONS["train"](ctx)

steps = {**default_steps.STEP_FUNCTIONS, "train": train}
controller = Controller(store, load_spec(project), project, steps=steps, holder=holder, lease_ttl=LEASE_TTL)
print("cycles", controller.run(cycles=1), flush=True)
""".replace("LEASE_TTL", repr(LEASE_TTL))


def _start(project: Path, holder: str, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, str(project), holder, str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")},
    )


def test_a_controller_paused_past_its_lease_is_fenced_off_and_stops(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "churn")
    a = _start(project, "a", PAUSE)
    try:
        assert a.stdout is not None
        line = a.stdout.readline()
        assert line.strip() == "training", line + (a.stderr.read() if a.stderr else "")
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(LEASE_TTL * 1.5)  # A's lease runs out while it is stopped
        b = _start(project, "b", 0.0)
        b_out, b_err = b.communicate(timeout=180)
        assert b.returncode == 0, b_err
        assert "cycles 1" in b_out, b_out + b_err
        os.kill(a.pid, signal.SIGCONT)
        a_out, a_err = a.communicate(timeout=180)
    finally:
        for proc in (a,):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()
    # A stopped cleanly, having run no cycle to its end, and said why.
    assert a.returncode == 0, a_err
    assert "cycles 0" in a_out, a_out + a_err
    assert "lease" in a_err and "was lost" in a_err, a_err
    with Store.for_project(project).open() as store:
        versions = store.registry.list_versions("churn")
        assert [v.version for v in versions] == [1], "A trained and registered a second version"
        cycles = store.runs.list(model="churn", kind="cycle")
        assert [c.status for c in cycles] == ["succeeded"]
        steps = store.runs.list(model="churn", kind="step")
        assert sorted(r.key for r in steps) == sorted(set(r.key for r in steps))
        verdict = store.audit.verify()
        assert verdict.ok, verdict.problem


@pytest.mark.parametrize("holder_after", ["other", "a-again"])
def test_every_write_is_refused_once_the_lease_changed_hands(tmp_path: Path, holder_after: str) -> None:
    from evertrain.controller.clock import ManualClock
    from evertrain.controller.lease import Lease
    from evertrain.exceptions import LeaseLostError

    clock = ManualClock(1000.0)
    with Store.for_project(tmp_path, clock=clock).open() as store:
        a = Lease(store.db, "controller/m", "a", ttl=10, clock=clock)
        assert a.acquire()
        a.fence()
        store.runs.start("cycle", model="m", key="m/cycle/1", params={})  # held: written
        clock.advance(11)
        other = Lease(store.db, "controller/m", "b", ttl=10, clock=clock)
        assert other.acquire() and other.token == 2
        if holder_after == "a-again":
            # b lets go and a takes the lease back: a new token, so a's old fence still refuses.
            other.release()
            assert Lease(store.db, "controller/m", "a", ttl=10, clock=clock).acquire()
        with pytest.raises(LeaseLostError, match="was lost"):
            store.runs.start("cycle", model="m", key="m/cycle/2", params={})
        assert [r.key for r in store.runs.list(model="m", kind="cycle")] == ["m/cycle/1"]
