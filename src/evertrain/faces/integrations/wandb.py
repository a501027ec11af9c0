"""Mirror a model's trainings and metrics to Weights & Biases (``tracking.wandb_project``).

Each finished training of the store becomes one W&B run, named ``<model>-v<N>`` (or
``<model>-training`` for a failed one), whose config holds the version's params, framework,
trigger and artifact hash, and whose summary holds its metrics (holdout metrics included)
and the newest gate verdict. W&B's own settings apply: ``WANDB_MODE=offline`` writes the
runs under ``WANDB_DIR`` (default ``./wandb``) without any network, for a later ``wandb
sync``; ``WANDB_API_KEY`` or ``wandb login`` for online mode.

Which trainings were mirrored is kept in ``.evertrain/wandb-mirrored.json`` of the project,
so a mirror after every cycle adds only the new ones (a W&B run cannot be looked up in
offline mode).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from evertrain.exceptions import NotFoundError, UsageError
from evertrain.store import Store

STATE_FILE = "wandb-mirrored.json"


def _wandb() -> Any:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    try:
        import wandb
    except ImportError:
        raise UsageError("Weights & Biases is not installed: pip install 'evertrain[wandb]'") from None
    return wandb


def _numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (nested) metrics dict, as ``a/b`` keys."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            out[f"{prefix}{key}"] = float(value)
    return out


def mirror(store: Store, model: str, project_name: str, state_dir: Path) -> dict[str, int]:
    """Log the trainings of ``model`` that W&B has not had yet; returns how many were logged."""
    wandb = _wandb()
    state_path = state_dir / STATE_FILE
    done: list[str] = json.loads(state_path.read_text()) if state_path.is_file() else []
    try:
        versions = {mv.run_id: mv for mv in store.registry.list_versions(model) if mv.run_id}
    except NotFoundError:
        versions = {}
    logged = 0
    runs = sorted(store.runs.list(model=model, kind="train"), key=lambda r: r.created_at)
    for run in runs:
        if run.status == "running" or run.id in done:
            continue
        mv = versions.get(run.id)
        config: dict[str, Any] = {"evertrain_run_id": run.id, "status": run.status, "model": model}
        summary = _numbers(run.metrics)
        if mv is not None:
            config.update(
                version=mv.version,
                framework=mv.framework,
                trigger=mv.trigger,
                artifact_sha256=mv.artifact_sha256,
                params=mv.params,
            )
            summary.update(_numbers(mv.metrics))
            evaluations = store.lineage.evaluations(model, mv.version)
            if evaluations:
                summary["gate_passed"] = float(bool(evaluations[-1]["passed"]))
        name = f"{model}-v{mv.version}" if mv is not None else f"{model}-training"
        # W&B prints its progress; standard output stays the command's own (--json)
        with contextlib.redirect_stdout(sys.stderr):
            wb = wandb.init(
                project=project_name,
                name=name,
                config=config,
                tags=["evertrain", model],
                job_type="training",
                reinit="create_new",
            )
            wb.summary.update(summary)
            if run.error:
                wb.summary["error"] = run.error[:1000]
            wb.finish(exit_code=0 if run.status == "succeeded" else 1)
        done.append(run.id)
        logged += 1
        state_dir.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(done))  # after each run: a crash never logs one twice
    return {"runs_logged": logged}


__all__ = ["mirror"]
