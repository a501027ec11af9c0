"""One training job, as every executor runs it: a folder in, a model and a result out.

A job folder holds ``job.json`` (what to train, how, and with which seed), the data as
Parquet (``train``, ``valid``, ``holdout``) and optionally the parent model. Running
it writes ``out/model.bin`` then ``out/result.json`` (the result is written last, so
its presence means the model is complete), or ``out/error.json`` on failure. The same
:func:`execute_job` runs in-process (inline), in a child process (local) and in a Ray
task, so every executor trains the same way and gets the same metrics.

``python -m evertrain.train.worker JOB_DIR`` is the child process of the local
executor; it exits on its own if its parent dies, so a killed controller leaves no
orphan training behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from evertrain.evaluate.metrics import compute_many
from evertrain.evaluate.scoring import importable, model_frame, predict_outputs, score
from evertrain.exceptions import EvertrainError
from evertrain.store.artifacts import sha256_bytes
from evertrain.store.formats import BoosterModel, get_format
from evertrain.train.trainers import LightGBMTrainer, TrainContext, get_trainer, model_bytes, write_atomic
from evertrain.train.tree_scoring import TreeScorer

JOB_FILE = "job.json"
PARENT_FILE = "parent.bin"
LOG_FILE = "log.txt"
OUT_DIR = "out"
MODEL_FILE = "model.bin"
RESULT_FILE = "result.json"
SCORES_FILE = "holdout_scores.npz"
ERROR_FILE = "error.json"
DATA_PARTS = ("train", "valid", "holdout")
#: How often the child checks that its parent is still alive; a dead parent means the
#: step was killed and will be resumed elsewhere, so this copy must stop using the CPU.
PARENT_POLL_SECONDS = 0.5
#: Exit code of a worker that stopped because its parent died.
EXIT_PARENT_GONE = 3


@dataclass
class TrainJob:
    """Everything a worker needs besides the data files; plain JSON so it crosses processes."""

    trainer: dict[str, Any]
    task: str
    target: str
    features: list[str]
    seed: int
    time_limit: float
    fingerprint: str
    weight_column: str | None = None
    project: str | None = None
    trusted_types: list[str] = field(default_factory=list)
    parent_framework: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = 30.0
    num_threads: int | None = None
    metrics: list[str] = field(default_factory=list)
    #: Score the valid part too (sweeps rank trials by it). Off by default: early stopping
    #: already tracks the valid loss, and scoring costs about half as much as training.
    score_valid: bool = False

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / JOB_FILE, json.dumps(asdict(self), sort_keys=True).encode())

    @classmethod
    def read(cls, folder: Path) -> TrainJob:
        return cls(**json.loads((folder / JOB_FILE).read_text()))


def _read_part(folder: Path, part: str) -> Any:
    return pq.read_table(folder / f"{part}.parquet").to_pandas()


def execute_job(folder: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the job in ``folder`` and write its outputs; returns the result written."""
    from evertrain.spec import TrainerSpec

    job = TrainJob.read(folder)
    out = folder / OUT_DIR
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    deadline = time.monotonic() + job.time_limit
    with importable(job.project):
        train, valid, holdout = (_read_part(folder, p) for p in DATA_PARTS)
        trainer = get_trainer(TrainerSpec.model_validate(job.trainer))
        parent = None
        if job.parent_framework and (folder / PARENT_FILE).is_file():
            parent = get_format(job.parent_framework).loads((folder / PARENT_FILE).read_bytes())
        checkpoints = Path(job.checkpoint_dir) if job.checkpoint_dir else folder / "checkpoints"
        scorer = None
        if len(holdout) and isinstance(trainer, LightGBMTrainer):
            holdout_X = model_frame(holdout, job.features, categorical_as_category=True)
            scorer = TreeScorer(holdout_X, lookback=trainer.spec.early_stopping_rounds or 0)
        context = TrainContext(
            task=job.task,
            target=job.target,
            features=list(job.features),
            seed=job.seed,
            weight_column=job.weight_column,
            parent=parent,
            checkpoint_dir=checkpoints,
            checkpoint_every=job.checkpoint_every,
            checkpoint_seconds=job.checkpoint_seconds,
            tree_scorer=scorer,
            early_stopping_rounds=trainer.spec.early_stopping_rounds,
            deadline=deadline,
            fingerprint=job.fingerprint,
            num_threads=job.num_threads,
            log=log,
        )
        log(
            f"training {trainer.kind} on {len(train)} rows (valid {len(valid)}, holdout {len(holdout)}), "
            f"seed {job.seed}"
        )
        fit_started = time.perf_counter()
        try:
            model = trainer.fit(train, valid, context)
        except BaseException:
            if scorer is not None:
                scorer.close()
            raise
        fit_seconds = time.perf_counter() - fit_started
        framework, data = model_bytes(model)
        options = {"trusted": job.trusted_types} if framework == "sklearn" and job.trusted_types else {}
        stored = get_format(framework, **options).loads(data)  # measure exactly what will be registered
        predicted = None
        if scorer is not None and isinstance(stored, BoosterModel):
            summed, how = scorer.outputs(stored, stored.booster_.current_iteration())
            log(how)
            context.info["holdout_scoring"] = "during training" if summed is not None else "after training"
            if summed is not None:
                predicted = summed if job.task == "regression" else BoosterModel.as_proba(summed)
        metrics: dict[str, Any] = {}
        if job.score_valid and len(valid):
            outputs, _ = predict_outputs(stored, valid, job.features, job.task, job.target)
            metrics["valid"] = compute_many(job.metrics, outputs)
        scored = None
        score_started = time.perf_counter()
        if len(holdout):
            scored = score(stored, holdout, job.features, job.task, job.target, predicted=predicted)
            metrics["holdout"] = compute_many(job.metrics, scored.outputs)
        score_seconds = time.perf_counter() - score_started
    result: dict[str, Any] = {
        "framework": framework,
        "model_sha256": sha256_bytes(data),
        "size_bytes": len(data),
        "metrics": metrics,
        "curves": context.curves,
        "info": context.info,
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "job_seconds": time.perf_counter() - started,
    }
    if scored is not None:
        result["holdout_scores"] = {"classes": scored.classes, "ms_per_row": scored.ms_per_row}
        write_atomic(out / SCORES_FILE, scored.arrays())
    write_atomic(out / MODEL_FILE, data)
    write_atomic(out / RESULT_FILE, json.dumps(result, sort_keys=True, default=_plain).encode())
    log(
        f"done in {fit_seconds:.2f}s: {framework} model, {len(data)} bytes, "
        f"sha256 {result['model_sha256'][:12]}"
    )
    return result


def _plain(value: Any) -> Any:
    """JSON for numpy scalars (class labels may be numpy ints or strings)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_error(folder: Path, exc: BaseException) -> None:
    out = folder / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    message = exc.message if isinstance(exc, EvertrainError) else f"{type(exc).__name__}: {exc}"
    write_atomic(out / ERROR_FILE, json.dumps({"error": message, "type": type(exc).__name__}).encode())


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker the moment its parent dies.

    Polling alone leaves a window in which an orphaned worker could still write a
    checkpoint while the restarted step already resumes from it.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _watch_parent() -> None:
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the kernel was asked
        os._exit(EXIT_PARENT_GONE)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="evertrain-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m evertrain.train.worker JOB_DIR\n")
        return 2
    folder = Path(args[0])
    _watch_parent()

    def log(line: str) -> None:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        sys.stdout.flush()

    try:
        execute_job(folder, log)
    except BaseException as exc:  # the child reports every failure, then exits non-zero
        traceback.print_exc()
        write_error(folder, exc)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main())
