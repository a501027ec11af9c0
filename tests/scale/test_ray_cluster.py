"""Training and a Tune sweep on a Ray head started by the test (``ray start --head`` on a loopback
port, with the token authentication current Ray turns on), through the ``evertrain`` command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scalekit import free_port, ray_available, wait_for_port

from evertrain.store import Store

SPEC = """\
model:
  name: scoring
  task: binary
  target: y
  features: [x0, x1]
  trainer: {kind: sklearn, estimator: sklearn.linear_model.LogisticRegression, seed: 0}
data:
  source: {kind: parquet, path: data.parquet}
  time_column: ts
training:
  executor: ray
  sweep: {trials: 2, space: {C: [0.1, 1.0]}}
"""
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVERTRAIN_", "RAY_"))}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    problem = ray_available()
    if problem is not None:
        print(f"skipping the Ray cluster tests: {problem}")
        pytest.skip(problem)
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = _env()
    # `ray start --block` in a session of its own, stopped by signalling that session alone:
    # `ray stop` would stop every Ray process on the machine, other tests' local Ray included.
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_for_port(port, timeout=180, proc=head)
        except (RuntimeError, TimeoutError):
            reason = f"ray start --head failed here: {(temp / 'head.log').read_text().strip()[-500:]}"
            print(f"skipping the Ray cluster tests: {reason}")
            pytest.skip(reason)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_session(head)
        log.close()


def _stop_session(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the head's session (``ray start --block`` then stops its processes), then
    SIGKILL to whatever of that session is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=10)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == head.pid:  # the session id
                os.kill(int(stat.parent.name), signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=10)


def _project(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    frame = pd.DataFrame(
        {"ts": np.arange(600.0) + 1.7e9, "x0": x[:, 0], "x1": x[:, 1], "y": (x.sum(1) > 0).astype(int)}
    )
    folder.mkdir()
    frame.to_parquet(folder / "data.parquet")
    (folder / "evertrain.yaml").write_text(SPEC)
    return folder


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_and_a_sweep_run_on_the_ray_cluster_and_json_stays_json(
    ray_head: str, tmp_path: Path
) -> None:
    project = _project(tmp_path / "project")
    env = _env(EVERTRAIN_RAY_ADDRESS=ray_head, EVERTRAIN_ACTOR="test")
    done = subprocess.run(
        [sys.executable, "-m", "evertrain.faces", "train", "scoring", "--project", str(project), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        cwd=project,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # Ray's and Tune's own output went to standard error
    assert result
    store = Store.for_project(project).open()
    try:
        versions = store.registry.list_versions("scoring")
        assert len(versions) == 1
        trials = store.runs.list(model="scoring", kind="trial")
        assert len(trials) == 2 and all(t.params.get("engine") == "ray-tune" for t in trials)
    finally:
        store.close()
    # Tune kept the sweep's results under the artifact store, where every node can reach them
    tune = project / ".evertrain" / "artifacts" / "tune"
    assert tune.is_dir() and any(tune.iterdir())


def test_an_unreachable_cluster_is_one_line_quickly(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    project = _project(tmp_path / "project")
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "evertrain.faces", "train", "scoring", "--project", str(project)],
        env=_env(EVERTRAIN_RAY_ADDRESS=dead, EVERTRAIN_ACTOR="test"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project,
    )
    seconds = time.monotonic() - started
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode != 0
    assert any(f"cannot reach the Ray cluster at {dead}" in line for line in lines), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    print(f"unreachable cluster reported after {seconds:.1f}s")
