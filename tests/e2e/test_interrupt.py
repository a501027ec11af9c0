"""Ctrl-C (SIGINT to a real process) stops a training at once: exit 130, its worker killed.

The trainer is a callable that would sleep for minutes, so only the interrupt can end
the command; the worker runs in a process group of its own (a terminal's Ctrl-C never
reaches it), so the command must kill it itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evertrain.store import Store
from evertrain.train.worker import LOG_FILE

pytestmark = pytest.mark.e2e

ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
SLOW_TRAINER = """\
import time


def sleepy(train, valid, context):
    print("training has begun", flush=True)
    time.sleep(600)
"""


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_train_kills_its_worker_and_exits_130(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    subprocess.run(
        [sys.executable, "-c", ENTRY, "init", str(project)], check=True, env=env, capture_output=True
    )
    (project / "slow_trainer.py").write_text(SLOW_TRAINER)
    spec = (project / "evertrain.yaml").read_text()
    spec = spec.replace("    kind: lightgbm\n", "    kind: callable\n    callable: slow_trainer:sleepy\n")
    spec = spec.replace("    params: {num_leaves: 15, learning_rate: 0.1, num_boost_round: 300}\n", "")
    spec = spec.replace("    early_stopping_rounds: 30\n", "")
    (project / "evertrain.yaml").write_text(spec)
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "train", "churn", "--project", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONPATH": os.pathsep.join([str(project), env.get("PYTHONPATH", "")])},
        cwd=project,
    )
    deadline = time.monotonic() + 120
    logs = project / ".evertrain"
    while not any("training has begun" in p.read_text(errors="replace") for p in logs.rglob(LOG_FILE)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the training never began"
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "the training runs in a worker process"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted: training of churn stopped" in err
    assert "Traceback" not in err
    for pid in workers:
        stop = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < stop:
            time.sleep(0.1)
        assert not _alive(pid), f"worker {pid} still runs after Ctrl-C"
    store = Store.for_project(project).open()
    try:
        # Nothing half-registered: the run is recorded, no version came of it.
        runs = store.runs.list(model="churn", kind="train")
        assert runs and all(r.status != "succeeded" for r in runs)
        assert not _has_model(store) or not store.registry.list_versions("churn")
    finally:
        store.close()


def _has_model(store: Store) -> bool:
    from evertrain.exceptions import NotFoundError

    try:
        store.registry.list_versions("churn")
    except NotFoundError:
        return False
    return True


def _has_runs(folder: Path) -> bool:
    """Whether the store in ``folder`` exists, is migrated and holds a run (the work has begun)."""
    if not (folder / ".evertrain" / "evertrain.db").is_file():
        return False
    store = Store.for_project(folder)
    try:
        return store.db.at_head() and bool(store.runs.list())
    finally:
        store.close()


def _ctrl_c_once_begun(argv: list[str], begun: Path, cwd: Path) -> str:
    """Start ``evertrain ARGV``, press Ctrl-C once its store in ``begun`` holds a run; its stderr.

    It must exit 130 with one line and no traceback, and leave no process of its own behind.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    deadline = time.monotonic() + 120
    while not _has_runs(begun):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"evertrain {' '.join(argv)} never began"
        time.sleep(0.2)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and err.strip().startswith("interrupted:"), err
    for pid in children:
        stop = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < stop:
            time.sleep(0.1)
        assert not _alive(pid), f"process {pid} still runs after Ctrl-C"
    return err


def test_ctrl_c_stops_the_demo_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    err = _ctrl_c_once_begun(["demo", "--out", str(out)], out, tmp_path)
    assert f"the demo stopped; {out} holds what it did so far" in err


def test_ctrl_c_stops_a_backtest_and_exits_130(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    subprocess.run(
        [sys.executable, "-c", ENTRY, "init", str(tmp_path / "shop")],
        check=True,
        env=env,
        capture_output=True,
    )
    data = tmp_path / "shop" / "data" / "churn-live.csv"
    keep = tmp_path / "replay"
    err = _ctrl_c_once_begun(
        ["backtest", str(data), "--target", "churned", "--keep", str(keep)], keep, tmp_path
    )
    assert f"the backtest stopped; its replay project is in {keep}" in err
