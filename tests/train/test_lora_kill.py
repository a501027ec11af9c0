"""Kill -9 during LoRA fine-tuning: the job run again resumes from its checkpoint and ends with
the adapter an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evertrain.data.tickets import make_support_tickets
from evertrain.store.formats import get_format
from evertrain.train.worker import MODEL_FILE, OUT_DIR, RESULT_FILE, TrainJob, execute_job, write_parts

pytest.importorskip("peft")
#: Generous bound on waiting for the first checkpoint (the child imports torch first).
WAIT_SECONDS = 180.0


def _job(folder: Path, base: Path) -> Path:
    rows = make_support_tickets(300, seed=6)
    write_parts(folder, {"train": rows[:200], "valid": rows[200:240], "holdout": rows[240:]})
    TrainJob(
        trainer={
            "kind": "lora",
            "seed": 2,
            "lora": {
                "base_model": str(base),
                "epochs": 2,
                "batch_size": 8,
                "max_length": 32,
                "learning_rate": 1e-2,
            },
        },
        task="multiclass",
        target="intent",
        features=["text"],
        seed=2,
        time_limit=600,
        fingerprint="lora-kill",
        checkpoint_every=5,
        num_threads=1,
        metrics=["accuracy"],
    ).write(folder)
    return folder


def test_kill_9_mid_fine_tuning_then_resume(tiny_base: Path, tmp_path: Path) -> None:
    job = _job(tmp_path / "job", tiny_base)
    state = job / "checkpoints" / "lora_state.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "evertrain.train.worker", str(job)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.is_file() and proc.poll() is None, "the fine-tuning ended before a checkpoint"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert not (job / OUT_DIR / RESULT_FILE).exists()

    lines: list[str] = []
    result = execute_job(job, log=lines.append)
    assert result["info"]["resumed_from_step"] >= killed_at > 0
    assert any("resuming from checkpoint" in line for line in lines)
    assert result["info"]["steps_run"] == 2 * 200 // 8

    # The same job, never interrupted: the same adapter (order and dropout depend on the seed alone).
    straight = _job(tmp_path / "straight", tiny_base)
    execute_job(straight, log=lambda line: None)
    resumed = get_format("lora").loads((job / OUT_DIR / MODEL_FILE).read_bytes())
    uninterrupted = get_format("lora").loads((straight / OUT_DIR / MODEL_FILE).read_bytes())
    assert resumed.tensors.keys() == uninterrupted.tensors.keys()
    for key, value in resumed.tensors.items():
        np.testing.assert_allclose(value, uninterrupted.tensors[key], atol=1e-5, err_msg=key)
