"""The stages of one training step over the state they share: claiming its run, windowing
and snapshotting the data, writing the worker's job, and running it through the executor.

:func:`evertrain.train.pipeline.train_model` puts them in order, registers what they
produce and judges it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pandas as pd

from evertrain import settings
from evertrain._background import ahead
from evertrain.data.source_base import Source
from evertrain.data.sources import open_source, read_table
from evertrain.data.windows import WEIGHT_COLUMN, Window, make_window
from evertrain.evaluate.metrics import DEFAULT_METRICS
from evertrain.exceptions import ConflictError
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.runs import Run
from evertrain.train.budget import Leases, holder_id
from evertrain.train.candidates import plan as plan_candidates
from evertrain.train.executors import Executor, Outcome
from evertrain.train.overlap import SnapshotWriter
from evertrain.train.progress import Listener, Progress, watch
from evertrain.train.sweep import run_sweep
from evertrain.train.worker import DATA_PARTS, PARENT_FILE, RECALL_PREFIX, TrainJob, write_parts

RUN_KIND = "train"
RUN_LEASE_PREFIX = "train-run:"
#: Threads a training uses unless its params say (``num_threads``). One, because every
#: executor then computes the same sums in the same order (Ray workers run one thread
#: each), and because several trainings sharing a host with more threads than cores make
#: OpenMP spin: on a busy 2-core machine, 2 LightGBM threads ran 3-5x slower than 1.
DEFAULT_NUM_THREADS = 1
#: Earlier champions offered beside the training sets after a change (the newest first): a
#: concept that comes back (a season, a regime) may find the model that served it. Each
#: costs one prediction of the valid part; three reach back three changes.
RECALL_LIMIT = 3


class TrainingStep:
    """One training step in progress; holds what the stages share."""

    def __init__(
        self,
        store: Store,
        spec: Spec,
        project: Path,
        executor: Executor,
        actor: str,
        on_progress: Listener | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.project = project
        self.executor = executor
        self.actor = actor
        self.name = spec.model.name
        self.holder = holder_id()
        self.leases = Leases(store)
        self.timings: dict[str, float] = {}
        self.snapshots: SnapshotWriter | None = None
        #: The source being read ahead (see :meth:`prefetch`).
        self._reading: Future[tuple[Source, pd.DataFrame]] | None = None
        #: Told the stage the step is in and, while the job runs, the job's own reports.
        self.on_progress = on_progress

    def report(self, stage: str) -> None:
        """Tell the listener (if any) which stage the step is in."""
        if self.on_progress is not None:
            self.on_progress(Progress(stage))

    # -- claiming ------------------------------------------------------------------------

    def _take(self, run: Run) -> bool:
        return self.leases.acquire(RUN_LEASE_PREFIX + run.id, self.holder)

    def claim(self, key: str | None, params: dict[str, Any]) -> tuple[Run, bool]:
        """The run this step works on, its lease held; and whether it resumes an earlier one."""
        runs = self.store.runs
        if key is None:
            # Only the running ones: the finished ones grow with every training.
            for run in reversed(runs.list(model=self.name, kind=RUN_KIND, status="running")):
                if self._take(run):
                    return run, True
            run = runs.start(RUN_KIND, model=self.name, params=params)
            self._take(run)
            return run, False
        attempt, last, found = 1, None, runs.find(key)
        while found is not None:
            last, attempt = found, attempt + 1
            found = runs.find(f"{key}#{attempt}")
        if last is not None and last.status == "succeeded":
            return last, True
        if last is not None and last.status == "running":
            if self._take(last):
                return last, True
            raise ConflictError(
                f"training step {last.key!r} is being run by "
                f"{self.leases.holder(RUN_LEASE_PREFIX + last.id)}; not starting it twice"
            )
        run = runs.start(
            RUN_KIND, model=self.name, key=key if last is None else f"{key}#{attempt}", params=params
        )
        if not self._take(run):
            raise ConflictError(f"training step {run.key!r} was claimed by another process a moment ago")
        return run, False

    # -- stages --------------------------------------------------------------------------

    def timed(self, stage: str, started: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started

    def _read_source(self) -> tuple[Source, pd.DataFrame]:
        spec = self.spec
        source = open_source(
            spec.data.source,
            base=self.project,
            logs_url=self.store.logs_url or settings.logs_url(self.project),
            model=self.name,
            target=spec.model.target,
            time_column=spec.data.time_column,
        )
        return source, source.read()

    def prefetch(self) -> None:
        """Start reading the source in a thread, for :meth:`window`.

        Claiming the run and the checks before the window need only the store; the reading
        (Parquet decoded in C++, without the interpreter lock) goes on beside them instead of
        after them. What the reading raises is raised by :meth:`window`, as it was read there.
        """
        if self._reading is None:
            self._reading = ahead(self._read_source, "evertrain-read-source")

    def window(self, cutoff: float, change_at: float | None = None) -> tuple[Window, str, Any]:
        started = time.perf_counter()
        spec = self.spec
        self.report("reading the data")
        reading, self._reading = self._reading, None
        source, frame = reading.result() if reading is not None else self._read_source()
        window = make_window(frame, spec, cutoff, change_at=change_at)
        self.timed("window", started)
        started = time.perf_counter()
        parts: list[tuple[str, Any, list[str]]] = [
            (role, frame, [source.uri])
            for role, frame in (("train", window.train), ("valid", window.valid), ("holdout", window.holdout))
        ]
        golden = None
        if spec.training.holdout.golden_path:
            golden = read_table(spec.training.holdout.golden_path, base=self.project)
            parts.append(("golden", golden, [f"golden:{self.project / spec.training.holdout.golden_path}"]))
        self.snapshots = SnapshotWriter(self.store, parts, window.columns.time)
        self.timed("snapshot", started)
        return window, source.uri, golden

    def write_job(self, job_dir: Path, window: Window, parent: int | None) -> TrainJob:
        spec, trainer = self.spec, self.spec.model.trainer
        assert self.snapshots is not None, "write_job follows window"
        job_dir.mkdir(parents=True, exist_ok=True)
        if not self.executor.in_process:
            # The tables the snapshots encode: the worker trains on exactly what lineage records.
            write_parts(job_dir, {role: self.snapshots.tables[role] for role in DATA_PARTS})
        parent_framework = None
        if parent is not None and trainer.warm_start:
            mv = self.store.registry.get_version(self.name, parent)
            (job_dir / PARENT_FILE).write_bytes(self.store.registry.load_artifact(mv))
            parent_framework = mv.framework
        metrics = list(DEFAULT_METRICS[spec.model.task]) + [
            g.metric for g in spec.gates if hasattr(g, "metric")
        ]
        # The worker adds the data's digest to this when it reads or writes a checkpoint. How many
        # workers fine-tune does not change what is computed: a job resumes on another number.
        what = trainer.model_dump(mode="json", exclude={"lora": {"distributed"}})
        fingerprint = hashlib.sha256(
            json.dumps([what, parent], sort_keys=True, default=str).encode()
        ).hexdigest()
        candidates = plan_candidates(
            len(window.train), int(window.info.get("n_train_after_change") or 0), window.info.get("change_at")
        )
        if trainer.kind == "lora":
            # One fine-tuning, on the configured window: a fit per candidate set would multiply
            # the cost of the most expensive trainer.
            candidates = candidates[:1]
        recall = (
            self._recall(job_dir, window.columns.features, parent)
            if len(candidates) > 1 and spec.training.sweep.trials == 0
            else []
        )
        job = TrainJob(
            trainer=trainer.model_dump(mode="json"),
            task=spec.model.task,
            target=spec.model.target,
            features=window.columns.features,
            seed=trainer.seed,
            time_limit=trainer.time_limit,
            fingerprint=fingerprint,
            weight_column=WEIGHT_COLUMN if WEIGHT_COLUMN in window.train.columns else None,
            project=str(self.project),
            trusted_types=list(spec.model.trusted_types),
            parent_framework=parent_framework,
            checkpoint_dir=str(job_dir / "checkpoints"),
            checkpoint_every=trainer.checkpoint_every,
            checkpoint_seconds=trainer.checkpoint_seconds,
            num_threads=int(trainer.params.get("num_threads") or DEFAULT_NUM_THREADS),
            metrics=list(dict.fromkeys(metrics)),
            candidates=[c.to_dict() for c in candidates],
            recall=recall,
            time_column=window.columns.time,
            report_progress=self.on_progress is not None,
        )
        job.write(job_dir)
        return job

    def _recall(self, job_dir: Path, features: list[str], parent: int | None) -> list[dict[str, Any]]:
        """Write the earlier champions that may serve again into the job folder, the newest first.

        An earlier champion is a version the champion alias held before and kept (one rolled
        back after its promotion failed in service is not offered), but the one it holds now
        (``parent``, whose decay or drift this training answers); one trained on other
        features, or a fine-tuned adapter, cannot be compared on these rows and is left out.
        Returns the job's ``recall`` entries.
        """
        registry = self.store.registry
        out: list[dict[str, Any]] = []
        # a model reinstated before is the same bytes under a newer number: offered once
        seen = {registry.get_version(self.name, parent).artifact_sha256} if parent is not None else set()
        for version in dict.fromkeys(reversed(registry.champion_stack(self.name))):
            if len(out) >= RECALL_LIMIT:
                break
            mv = registry.get_version(self.name, version)
            if mv.artifact_sha256 in seen or mv.framework == "lora" or mv.params.get("features") != features:
                continue
            seen.add(mv.artifact_sha256)
            name = f"{RECALL_PREFIX}{version}.bin"
            (job_dir / name).write_bytes(registry.load_artifact(mv))
            out.append({"version": version, "framework": mv.framework, "file": name})
        return out

    def execute(
        self,
        run: Run,
        job_dir: Path,
        seconds_left: float,
        beside: Callable[[], None],
        scores_ready: Callable[[], None] | None = None,
    ) -> tuple[Outcome, dict[str, Any] | None]:
        """Run the job (or the sweep); ``beside`` starts the work that runs beside the training,
        once the executor has the job; ``scores_ready``: see :meth:`Executor.run` (not for a
        sweep's trials)."""
        started = time.perf_counter()
        sweep_info = None
        limit = min(self.spec.model.trainer.time_limit, seconds_left)
        tables = None if self.snapshots is None else self.snapshots.tables
        if self.spec.training.sweep.trials > 0:
            self.report(f"sweeping {self.spec.training.sweep.trials} trials")
            beside()
            sweep = run_sweep(self.store, self.spec, run, job_dir, self.executor, seconds_left, tables)
            sweep_info = {
                "metric": sweep.metric,
                "best_params": sweep.best_params,
                "best_value": sweep.best_value,
                "trials": sweep.trials,
                "seconds": sweep.seconds,
            }
            if sweep.best is None:
                outcome = Outcome(False, sweep.seconds, "", error="no sweep trial produced a model")
            else:
                outcome = sweep.best
                outcome.seconds = sweep.seconds
        else:
            self.report("training")
            with watch(job_dir, self.on_progress):
                outcome = self.executor.run(job_dir, limit, tables, started=beside, scores_ready=scores_ready)
        self.timed("train", started)
        return outcome, sweep_info
