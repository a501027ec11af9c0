"""The controller loop: clean stops, one actor per store, failed steps recorded and survived."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from evertrain.controller.clock import ManualClock
from evertrain.controller.context import CycleContext
from evertrain.controller.loop import STEPS, Controller
from evertrain.exceptions import StoreError
from evertrain.spec import load_spec
from evertrain.store import Store


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _copy(demo_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(demo_run[0], project)
    return project


def test_sigterm_stops_the_loop_cleanly_and_frees_the_lease(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    project = _copy(demo_run, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "evertrain.faces", "run", "--project", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("cycle "), first
        lines = [first]
        while not lines[-1].startswith("next cycle at"):  # one line per step, then when the next is due
            lines.append(proc.stdout.readline())
            assert lines[-1], "".join(lines)
        # each step's line has the same indent; the detail under it (a gate's checks) has more
        steps_shown = [line.split()[0] for line in lines[1:] if _indent(line) == _indent(lines[1])]
        assert steps_shown == list(STEPS), "".join(lines)
        proc.send_signal(signal.SIGTERM)  # the loop now waits for its next cycle
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "1 cycle(s) run" in out
    store = Store.for_project(project).open()
    with store.db.read() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM leases WHERE expires_at > 0").scalar() == 0
        )  # released
    cycles = store.runs.list(model="demo", kind="cycle")
    assert cycles[-1].status == "succeeded"


def test_two_controllers_on_one_store_never_both_act(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    project = _copy(demo_run, tmp_path)
    clock = ManualClock(time.time())
    store = Store.for_project(project, clock=clock).open()
    spec = load_spec(project)
    first = Controller(store, spec, project, clock=clock, holder="a")
    second = Controller(store, spec, project, clock=clock, holder="b")
    before = len(store.runs.list(model="demo", kind="cycle"))
    assert first.cycle()["cycle"] is not None
    skipped = second.cycle()
    assert skipped["cycle"] is None and "another controller holds the lease (a)" in skipped["skipped"]
    assert len(store.runs.list(model="demo", kind="cycle")) == before + 1


def test_a_failed_step_is_recorded_and_the_next_cycle_runs(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from evertrain.controller import steps

    project = _copy(demo_run, tmp_path)
    clock = ManualClock(time.time())
    store = Store.for_project(project, clock=clock).open()
    calls = {"n": 0}

    def flaky_monitor(ctx: CycleContext) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreError("the logs bucket did not answer")
        return steps.monitor(ctx)

    table = {**steps.STEP_FUNCTIONS, "monitor": flaky_monitor}
    controller = Controller(store, load_spec(project), project, clock=clock, steps=table, holder="t")
    broken = controller.cycle()
    assert broken["monitor"] == {
        "status": "failed",
        "error": "the logs bucket did not answer",
        "error_code": "store",  # what kind of failure: a task runner retries it (exit 3)
    }
    failed = [r for r in store.runs.list(model="demo", kind="step") if r.status == "failed"]
    assert failed and failed[-1].error == "the logs bucket did not answer"
    clock.advance(3600)
    healthy = controller.cycle()
    assert healthy["monitor"]["status"] == "ok"
    assert set(STEPS) <= healthy.keys()


def test_any_exception_fails_only_its_step_and_a_failed_training_holds_no_cooldown(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from evertrain.controller import steps
    from evertrain.faces.run_lines import step_lines

    project = _copy(demo_run, tmp_path)
    clock = ManualClock(time.time())
    store = Store.for_project(project, clock=clock).open()

    def broken_train(ctx: CycleContext) -> dict[str, Any]:
        raise KeyError("a column the trainer wanted")

    table = {**steps.STEP_FUNCTIONS, "train": broken_train}
    controller = Controller(store, load_spec(project), project, clock=clock, steps=table, holder="t")
    result = controller.cycle(manual="asked by hand")
    assert result["decide"]["action"] == "retrain"
    assert result["train"]["status"] == "failed"
    assert result["train"]["error"] == "KeyError: 'a column the trainer wanted'"
    assert result["train"]["error_code"] == "internal"
    assert "does not count toward the cooldown" in result["train"]["cooldown"]
    assert result["at"] not in result["history"]["retrain_times"]  # the cooldown is not held by it
    assert result["gate"] == {"status": "skipped"}
    lines = step_lines("train", result["train"])
    assert lines[0].startswith("train    FAILED: KeyError") and "cooldown" in lines[1]
    failed = [r for r in store.runs.list(model="demo", kind="step") if r.status == "failed"]
    assert failed[-1].error == "KeyError: 'a column the trainer wanted'"
    clock.advance(3600)
    assert controller.cycle()["monitor"]["status"] == "ok"  # the loop went on


def test_the_loop_takes_arrow_memory_from_the_c_library_unless_arrow_is_told_otherwise(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Every read of the loop comes after a pause, which Arrow's default allocator made 3 to 5
    times slower; a choice the user made through Arrow's own variable stands."""
    import pyarrow as pa

    project = _copy(demo_run, tmp_path)
    clock = ManualClock(time.time())
    store = Store.for_project(project, clock=clock).open()
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.mimalloc_memory_pool())  # Arrow's default in the wheels
    try:
        Controller(store, load_spec(project), project, clock=clock, holder="t").run(cycles=1)
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(before)
        store.close()
    probe = (
        "import pyarrow as pa; from evertrain.settings import use_system_arrow_allocator as use; "
        "use(); print(pa.default_memory_pool().backend_name)"
    )
    for told, expected in ((None, "system"), ("mimalloc", "mimalloc")):
        env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
        if told is not None:
            env["ARROW_DEFAULT_MEMORY_POOL"] = told
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected


def test_the_newest_cycle_is_found_by_number_among_many(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The demo ran dozens of cycles: the newest is the highest number (cycle 10 after 9), and
    the history comes from the newest finished one, as reading every cycle's record gave."""
    project = _copy(demo_run, tmp_path)
    store = Store.for_project(project, clock=ManualClock(time.time())).open()
    try:
        cycles = store.runs.list(model="demo", kind="cycle")
        assert len(cycles) > 10
        newest = max(cycles, key=lambda r: int(r.params["cycle"]))
        done = max((r for r in cycles if r.status == "succeeded"), key=lambda r: int(r.params["cycle"]))
        controller = Controller(store, load_spec(project), project, holder="t")
        assert controller.last_cycle() == (int(newest.params["cycle"]), newest.status)
        history, at = controller.previous()
        assert at == (done.result or {}).get("at") and history.to_dict() == (done.result or {})["history"]
    finally:
        store.close()
