"""Kill -9 during a training step: the restarted step finishes and exactly one version exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evertrain.data.examples import make_churn_stream
from evertrain.spec import load_spec
from evertrain.store import Store
from evertrain.train.pipeline import train_model

#: Generous bound on waiting for the first checkpoint; the test fails rather than hangs.
WAIT_SECONDS = 120.0
SPEC = """
model:
  name: churn
  target: churned
  trainer:
    kind: lightgbm
    seed: 5
    early_stopping_rounds: null
    checkpoint_every: 50
    params: {num_boost_round: 600, learning_rate: 0.02, num_leaves: 15, num_threads: 1}
data:
  source: {kind: csv, path: churn.csv}
  time_column: ts
  label_time_column: label_ts
training:
  executor: local
  window: {kind: expanding}
"""


def _checkpoint(project: Path) -> Path | None:
    found = sorted((project / ".evertrain" / "work").glob("*/checkpoints/state.json"))
    return found[0] if found else None


def test_kill_9_mid_training_then_restart(project: Path) -> None:
    make_churn_stream(3000, seed=9).to_csv(project / "churn.csv", index=False)
    (project / "evertrain.yaml").write_text(SPEC)
    cli = "import sys; from evertrain.faces.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", cli, "train", "churn", "--project", str(project)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while _checkpoint(project) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _checkpoint(project) is not None and proc.poll() is None, "training ended before a checkpoint"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    store = Store.for_project(project).open()
    [killed] = store.runs.list(model="churn", kind="train")
    assert killed.status == "running" and store.registry.list_versions("churn") == []

    result = train_model(store, load_spec(project), project, reason="restart after kill")
    assert result.resumed and result.run_id == killed.id
    assert [v.version for v in store.registry.list_versions("churn")] == [1]
    [run] = store.runs.list(model="churn", kind="train")
    assert run.status == "succeeded" and run.metrics["resumed_from_iteration"] >= 50
    assert run.metrics["iterations_run"] == 600
    store.close()
