"""One training job, as every executor runs it: a folder in, a model and a result out.

A job folder holds ``job.json`` (what to train, how, and with which seed), the data as
Arrow IPC files (``train``, ``valid``, ``holdout``: the very tables the snapshots encode,
uncompressed so that they are written and mapped back at memory speed) and optionally the
parent model. The in-process executor hands the tables over in memory instead. Running
it writes ``out/model.bin`` then ``out/result.json`` (the result is written last, so
its presence means the model is complete), or ``out/error.json`` on failure. The same
:func:`execute_job` runs in-process (inline), in a child process (local) and in a Ray
task, so every executor trains the same way and gets the same metrics.

``python -m evertrain.train.worker JOB_DIR`` is the child process of the local
executor; it exits on its own if its parent dies, so a killed controller leaves no
orphan training behind. With ``--done-fd FD`` first, it writes a newline to that pipe
once a job has succeeded and its outputs are written, so that the parent need not wait
for the process to end; before it, an ``s`` once a booster's holdout scores are summed
and written (the parent checks its score gates while the worker writes and checks the
model). ``python -m evertrain.train.worker --wait`` is a worker started
ahead of need: it does its imports (LightGBM's alone take about a second) and a tiny
training through the same code, then reads its job folder from standard input, so a
long-running controller's next training does not wait for a Python start. ``--wait
lightgbm`` is the worker of a one-off LightGBM training, started as the training begins:
its imports overlap its caller's reading and windowing of the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from evertrain.evaluate.metrics import compute_many, get_metric
from evertrain.evaluate.scoring import (
    Scored,
    importable,
    measure_latency,
    median_latency,
    model_frame,
    pass_latency,
    predict_outputs,
    timed_by_its_pass,
    timed_predictions,
    wants_categories,
)
from evertrain.exceptions import EvertrainError
from evertrain.settings import use_system_arrow_allocator
from evertrain.store.formats import BoosterModel, get_format
from evertrain.train.candidates import Candidate, choose, row_losses, training_rows
from evertrain.train.progress import PROGRESS_FILE, ProgressWriter
from evertrain.train.trainers import LightGBMTrainer, TrainContext, get_trainer, model_bytes, write_atomic
from evertrain.train.tree_scoring import TreeScorer

JOB_FILE = "job.json"
PARENT_FILE = "parent.bin"
#: Files of the earlier champions a job may reinstate (``TrainJob.recall``): ``recall-<version>.bin``.
RECALL_PREFIX = "recall-"
LOG_FILE = "log.txt"
OUT_DIR = "out"
MODEL_FILE = "model.bin"
RESULT_FILE = "result.json"
SCORES_FILE = "holdout_scores.npy"
#: The class order of the holdout scores handed over early (see :func:`execute_job`'s
#: ``scores_ready``), written with them.
SCORES_CLASSES_FILE = "holdout_classes.json"
#: What the worker writes on its pipe to the parent (``--done-fd``): the holdout scores are
#: handed over early, and the outputs are written (then the latency figure).
SCORES_WORD = b"s"
DONE_WORD = b"\n"
#: The latency probe's figure, when the worker finished the probe after its other outputs.
LATENCY_FILE = "latency.json"
ERROR_FILE = "error.json"
DATA_PARTS = ("train", "valid", "holdout")
DATA_SUFFIX = ".arrow"
#: How often the child checks that its parent is still alive; a dead parent means the
#: step was killed and will be resumed elsewhere, so this copy must stop using the CPU.
PARENT_POLL_SECONDS = 0.5
#: Exit code of a worker that stopped because its parent died.
EXIT_PARENT_GONE = 3
#: ``--wait`` argument of a worker started for a :func:`lightgbm_alone` job about to come.
LIGHTGBM_ALONE = "lightgbm"
#: Option naming the pipe on which a worker tells its parent that the job succeeded and its
#: outputs are written (a newline), before it exits.
DONE_FD = "--done-fd"


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
    #: Candidate training sets (``train.candidates``), the configured window first; with
    #: more than one, each is fitted and the valid part chooses (see that module).
    candidates: list[dict[str, Any]] = field(default_factory=list)
    #: Earlier champions offered beside the candidate training sets, the newest first: each
    #: ``{"version", "framework", "file"}`` (the file in the job folder). One whose loss on the
    #: valid part is lower than the chosen training set's by more than one standard error is
    #: reinstated: its model is the job's model.
    recall: list[dict[str, Any]] = field(default_factory=list)
    #: The event-time column, which the candidates cut and weight the train rows by.
    time_column: str | None = None
    #: Whether someone watches the job's progress file (see ``train.progress``); nobody
    #: reads it otherwise, so it is not written.
    report_progress: bool = True

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # Not flushed to disk: every attempt of a step writes its job again before running it.
        write_atomic(folder / JOB_FILE, json.dumps(asdict(self), sort_keys=True).encode(), durable=False)

    @classmethod
    def read(cls, folder: Path) -> TrainJob:
        return cls(**json.loads((folder / JOB_FILE).read_text()))


def write_parts(folder: Path, tables: Mapping[str, pa.Table | pd.DataFrame]) -> None:
    """Write a job's data tables into ``folder`` (each whole or not at all)."""
    # Imported here: the caller's side needs it, a worker started for its job does not (it
    # brings pyarrow's Parquet and CSV readers).
    from evertrain.data.tables import arrow_table

    folder.mkdir(parents=True, exist_ok=True)
    for part, table in tables.items():
        if isinstance(table, pd.DataFrame):
            table = arrow_table(table)
        path = folder / f"{part}{DATA_SUFFIX}"
        tmp = path.with_name(f".{path.name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)


def _read_tables(folder: Path, given: Mapping[str, pa.Table] | None) -> dict[str, pa.Table]:
    if given is not None:
        return {part: given[part] for part in DATA_PARTS}
    return {
        part: pa.ipc.open_file(pa.memory_map(str(folder / f"{part}{DATA_SUFFIX}"))).read_all()
        for part in DATA_PARTS
    }


def data_digest(tables: Mapping[str, pa.Table], parts: tuple[str, ...] = ("train", "valid")) -> str:
    """A digest of the tables a model is fitted on, so a checkpoint is only resumed on the same data."""
    digest = hashlib.sha256()
    for part in parts:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, tables[part].schema) as writer:
            writer.write_table(tables[part])
        digest.update(part.encode())
        digest.update(memoryview(sink.getvalue()))
    return digest.hexdigest()


def _fingerprint(job: TrainJob, parts: Mapping[str, pa.Table]) -> str:
    """The job's fingerprint with its data's digest; asked for only when there is a checkpoint
    to read or write, since hashing the data is not free."""
    return hashlib.sha256(f"{job.fingerprint}:{data_digest(parts)}".encode()).hexdigest()


@dataclass(frozen=True)
class TrainerSettings:
    """The spec's ``model.trainer`` as a job carries it: the same fields with the same
    defaults as :class:`evertrain.spec.TrainerSpec` (a test holds them equal).

    The step writes them from a validated spec (a sweep checks its trial values there
    too), so a worker takes them as they are: validating them again would import the
    spec's models (pydantic, YAML, cron parsing: about a fifth of a second of a worker's
    start) for nothing.
    """

    kind: str = "lightgbm"
    estimator: str | None = None
    callable: str | None = None
    lora: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    early_stopping_rounds: int | None = 50
    warm_start: bool = False
    base_rate_check: bool = True
    time_limit: float = 3600.0
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = 30.0

    @classmethod
    def of(cls, trainer: Mapping[str, Any]) -> Any:
        """The settings of a job's ``trainer``; through the spec's validation where a LoRA
        trainer reads nested settings as the spec's own objects, or a field is not known here."""
        if trainer.get("kind") == "lora" or not set(trainer) <= {f.name for f in dataclasses.fields(cls)}:
            from evertrain.spec import TrainerSpec

            return TrainerSpec.model_validate(dict(trainer))
        return cls(**trainer)


def execute_job(
    folder: Path,
    log: Callable[[str], None] = print,
    tables: Mapping[str, pa.Table] | None = None,
    later: list[Callable[[], None]] | None = None,
    scores_ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train the job in ``folder`` and write its outputs; returns the result written.

    ``tables``: the job's data when the caller holds it in this process (else it is read
    from the folder). ``later``: where the caller, which hands the outputs over before it
    runs what this adds there, lets the job time its latency probe after them: a booster
    whose holdout scores were summed during the fit is then probed while the caller's side
    registers and judges the model; the result says ``latency_pending`` and the probe's
    figure goes to :data:`LATENCY_FILE`.

    ``scores_ready``: called (from the holdout's scoring thread) once a booster's holdout
    scores are summed, as soon as its last trees are scored, with the scores written
    (:data:`SCORES_FILE` and :data:`SCORES_CLASSES_FILE`): the caller's side checks its
    score gates on them while this writes, rebuilds and checks the model. They are
    provisional: the scores in the outputs are the ones to judge, and the same bytes unless
    the check against the registered model failed or the trees were not kept.
    """
    job = TrainJob.read(folder)
    out = folder / OUT_DIR
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    deadline = time.monotonic() + job.time_limit
    progress = ProgressWriter(folder / PROGRESS_FILE) if job.report_progress else None
    with importable(job.project), contextlib.ExitStack() as closing:
        if progress is not None:
            closing.callback(progress.close)
        parts = _read_tables(folder, tables)
        # One block per column: the columns stay the Arrow buffers (memory-mapped from the job
        # folder) wherever their type allows, instead of being copied into one block that the
        # trainer copies again into its own matrix.
        train, valid, holdout = (parts[p].to_pandas(split_blocks=True) for p in DATA_PARTS)
        trainer = get_trainer(TrainerSettings.of(job.trainer))
        parent = None
        if job.parent_framework and (folder / PARENT_FILE).is_file():
            parent = get_format(job.parent_framework).loads((folder / PARENT_FILE).read_bytes())
        checkpoints = Path(job.checkpoint_dir) if job.checkpoint_dir else folder / "checkpoints"
        scorer = None
        #: The holdout scores handed over before the model is written (see ``_hand_scores_over``).
        handed: dict[str, Any] = {}
        plan = [Candidate.from_dict(c) for c in job.candidates]
        # With several candidates, the chosen model is scored on the holdout after the choice.
        if len(holdout) and isinstance(trainer, LightGBMTrainer) and not (len(plan) > 1 and len(valid)):
            # The holdout's frame is made by the scoring thread once the fit is under way.
            scorer = TreeScorer(
                functools.partial(model_frame, holdout, job.features, categorical_as_category=True),
                lookback=trainer.spec.early_stopping_rounds or 0,
            )
            if scores_ready is not None:
                hand_over = functools.partial(_hand_scores_over, out, holdout, job, scores_ready, handed)
                scorer.on_summed = hand_over
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
            fingerprint=lambda: _fingerprint(job, parts),
            num_threads=job.num_threads,
            log=log,
            project=Path(job.project) if job.project else None,
            on_progress=progress,
        )
        log(
            f"training {trainer.kind} on {len(train)} rows (valid {len(valid)}, holdout {len(holdout)}), "
            f"seed {job.seed}"
        )
        fit_started = time.perf_counter()
        chosen: list[dict[str, Any]] | None = None
        try:
            if len(plan) > 1 and len(valid):
                model, context, chosen, losses = _fit_candidates(
                    trainer, train, valid, job, context, plan, log
                )
                if job.recall:
                    model, context = _recall(folder, job, valid, (model, context, losses), chosen, log)
            else:
                model = trainer.fit(train, valid, context)
        except BaseException:
            if scorer is not None:
                scorer.close()
            raise
        fit_seconds = time.perf_counter() - fit_started
        framework, data = model_bytes(model)
        # Measure exactly what will be registered: the model rebuilt from its bytes (a booster
        # the trainer itself rebuilt from this very text already is).
        stored = model
        # A LoRA adapter is scored as trained: rebuilding it would load its base model again.
        if framework != "lora" and not (isinstance(model, BoosterModel) and model.text_ is not None):
            stored = _loads(job, framework, data)
        metrics: dict[str, Any] = {}
        if job.score_valid and len(valid):
            outputs, _ = predict_outputs(stored, valid, job.features, job.task, job.target)
            metrics["valid"] = compute_many(job.metrics, outputs)
        scored = None
        score_started = time.perf_counter()
        if len(holdout):
            # Timed while the scoring thread adds up the last trees (on the rows it scores).
            X = (
                scorer.X
                if scorer is not None
                else model_frame(holdout, job.features, categorical_as_category=wants_categories(stored))
            )
            own_pass = timed_by_its_pass(stored)
            ms_per_row = checked = None
            if scorer is not None and isinstance(stored, BoosterModel) and later is not None:
                # Timed after the outputs are handed over, while the caller registers and judges.
                later.append(functools.partial(_finish_latency, out, stored, X))
            elif scorer is not None and isinstance(stored, BoosterModel):
                # The booster's own output on the probe's rows, which also checks the sums below.
                times, checked = timed_predictions(stored.raw, X)
                ms_per_row = median_latency(times)
            elif not own_pass:
                ms_per_row = measure_latency(stored, X)
            predicted = summed = None
            if scorer is not None and isinstance(stored, BoosterModel):
                summed, how = scorer.outputs(stored, stored.booster_.current_iteration(), checked)
                log(how)
                context.info["holdout_scoring"] = (
                    "during training" if summed is not None else "after training"
                )
                if summed is not None:
                    predicted = summed if job.task == "regression" else BoosterModel.as_proba(summed)
            pass_started = time.perf_counter()
            early = handed.get("predictions")
            if summed is not None and early is not None and np.array_equal(early, summed):
                # The scores handed over early, now checked: made and written once.
                outputs, order = handed["outputs"], handed["order"]
            else:
                handed.clear()
                outputs, order = predict_outputs(
                    stored, holdout, job.features, job.task, job.target, predicted=predicted
                )
            if own_pass:
                ms_per_row = pass_latency(time.perf_counter() - pass_started, len(holdout))
            scored = Scored(outputs, order, ms_per_row)
            metrics["holdout"] = compute_many(job.metrics, scored.outputs)
        if scorer is not None:
            scorer.close()  # its thread has ended unless the model was not a booster after all
        score_seconds = time.perf_counter() - score_started
    result: dict[str, Any] = {
        "framework": framework,
        "model_sha256": hashlib.sha256(data).hexdigest(),  # not the artifact store's fsspec
        "size_bytes": len(data),
        "metrics": metrics,
        "curves": context.curves,
        "info": context.info,
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "job_seconds": time.perf_counter() - started,
    }
    if chosen is not None:
        result["candidates"] = chosen
    if scored is not None:
        result["holdout_scores"] = {
            "classes": scored.classes,
            "ms_per_row": scored.ms_per_row,
            "latency_pending": bool(later),
        }
        if not handed:  # else its file holds them already
            write_atomic(out / SCORES_FILE, scored.arrays(), durable=False)
    # Not flushed to disk: outputs of an attempt that did not end in a registered version are
    # cleared before the next attempt; the model becomes durable in the artifact store.
    write_atomic(out / MODEL_FILE, data, durable=False)
    write_atomic(
        out / RESULT_FILE, json.dumps(result, sort_keys=True, default=_plain).encode(), durable=False
    )
    log(
        f"done in {fit_seconds:.2f}s: {framework} model, {len(data)} bytes, "
        f"sha256 {result['model_sha256'][:12]}"
    )
    return result


def _hand_scores_over(
    out: Path,
    holdout: pd.DataFrame,
    job: TrainJob,
    scores_ready: Callable[[], None],
    handed: dict[str, Any],
    predictions: np.ndarray,
    model: Any,
) -> None:
    """Write a booster's summed holdout scores as the outputs will hold them (``model``: the
    training booster, for its classes) and say so (see :func:`execute_job`). ``handed``
    keeps them: where the checked sums are these, the outputs are these."""
    predicted = predictions if job.task == "regression" else BoosterModel.as_proba(predictions)
    outputs, order = predict_outputs(model, holdout, job.features, job.task, job.target, predicted=predicted)
    write_atomic(out / SCORES_CLASSES_FILE, json.dumps(order, default=_plain).encode(), durable=False)
    write_atomic(out / SCORES_FILE, Scored(outputs, order).arrays(), durable=False)
    handed.update(predictions=predictions, outputs=outputs, order=order)
    scores_ready()


def _finish_latency(out: Path, model: BoosterModel, X: pd.DataFrame) -> None:
    """The latency probe put off until the outputs are handed over (see :func:`execute_job`'s
    ``later``), and its figure."""
    times, _ = timed_predictions(model.raw, X)
    figure = {"ms_per_row": median_latency(times)}
    write_atomic(out / LATENCY_FILE, json.dumps(figure).encode(), durable=False)


def _fit_candidates(
    trainer: Any,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    job: TrainJob,
    context: TrainContext,
    plan: list[Candidate],
    log: Callable[[str], None],
) -> tuple[Any, TrainContext, list[dict[str, Any]], np.ndarray]:
    """Fit each candidate training set and keep the one the valid part chooses.

    Each fits on its rows of the same train part, early-stops on the same valid part and
    is scored there; each checkpoints in a folder of its own, under a fingerprint of its own.
    Returns the chosen model, its context (curves and info), every candidate's record and
    the chosen model's per-row losses on the valid part.
    """
    from evertrain.data.windows import WEIGHT_COLUMN, epoch_seconds

    times = (
        epoch_seconds(train[job.time_column])
        if job.time_column and job.time_column in train.columns
        else None
    )
    fitted: dict[str, tuple[Any, TrainContext]] = {}
    losses: dict[str, np.ndarray] = {}
    records: dict[str, dict[str, Any]] = {}
    metric = get_metric(job.metrics[0]) if job.metrics else None
    folder = context.checkpoint_dir
    for candidate in plan:
        rows, weights = training_rows(train, candidate, times, WEIGHT_COLUMN)
        if not len(rows):
            continue
        own = dataclasses.replace(
            context,
            on_progress=_labelled(context.on_progress, f"training set {candidate.name}:"),
            weight_column=weights,
            checkpoint_dir=None if folder is None else folder / candidate.name,
            fingerprint=_candidate_fingerprint(context, candidate.name),
            tree_scorer=None,
            curves={},
            info={},
        )
        log(f"candidate {candidate.name}: {len(rows)} train rows")
        model = trainer.fit(rows, valid, own)
        outputs, _ = predict_outputs(model, valid, job.features, job.task, job.target)
        fitted[candidate.name] = (model, own)
        losses[candidate.name] = row_losses(outputs)
        records[candidate.name] = {
            **candidate.to_dict(),
            "n_train": len(rows),
            "weighted": weights is not None,
            "valid_metric": None if metric is None else metric.name,
            "valid_score": None if metric is None else _finite_or_none(metric(outputs)),
            "n_valid": len(valid),
        }
    name, evidence = choose(losses)
    for key, record in records.items():
        record.update(evidence.get(key, {}), chosen=key == name)
    model, chosen_context = fitted[name]
    chosen_context.info.update(training_set=name, n_train_rows=records[name]["n_train"])
    log(
        "chose "
        + name
        + " by the one-standard-error rule on the valid part: "
        + ", ".join(f"{k} loss {r['valid_loss']:.4f}" for k, r in records.items())
    )
    return model, chosen_context, list(records.values()), losses[name]


def _recall(
    folder: Path,
    job: TrainJob,
    valid: pd.DataFrame,
    fresh: tuple[Any, TrainContext, np.ndarray],
    records: list[dict[str, Any]],
    log: Callable[[str], None],
) -> tuple[Any, TrainContext]:
    """The chosen model, or the earlier champion that does better on the valid part.

    ``fresh``: the model fitted on the chosen training set, its context and its per-row
    losses on the valid part. Each earlier champion of ``job.recall`` is scored on the same
    valid rows and compared with it by the same one-standard-error rule: it replaces the
    fresh model only if its loss is lower by more than one standard error of the paired
    difference (the fresh model wins a close call).
    Each is added to ``records`` with its evidence. A file that is missing or a model that
    cannot answer these rows is recorded as such and left out.
    """
    model, context, fresh_losses = fresh
    chosen = next(r for r in records if r.get("chosen"))
    losses: dict[str, np.ndarray] = {str(chosen["name"]): fresh_losses}
    loaded: dict[str, tuple[int, Any]] = {}
    found: list[dict[str, Any]] = []
    for entry in job.recall:
        version, name = int(entry["version"]), f"version {int(entry['version'])}"
        record: dict[str, Any] = {"name": name, "version": version, "n_valid": len(valid)}
        try:
            data = (folder / str(entry["file"])).read_bytes()
            past = _loads(job, str(entry["framework"]), data)
            past_outputs, _ = predict_outputs(past, valid, job.features, job.task, job.target)
        except Exception as exc:  # any library's load or predict error: the fresh model stands
            record["error"] = f"{type(exc).__name__}: {exc}"
            records.append({**record, "chosen": False})
            continue
        losses[name] = row_losses(past_outputs)
        loaded[name] = (version, past)
        found.append(record)
    winner, evidence = choose(losses)
    for record in found:
        records.append({**record, **evidence[record["name"]], "against": chosen["name"], "chosen": False})
    if winner not in loaded:
        if found:
            log(f"kept {chosen['name']}: no earlier champion did better on the valid part")
        return model, context
    version, past = loaded[winner]
    for record in records:
        record["chosen"] = record.get("name") == winner
    log(f"reinstated {winner}: its valid loss is lower than {chosen['name']}'s by more than one SE")
    reinstated = dataclasses.replace(context, curves={}, info={})
    reinstated.info.update(training_set=winner, reinstated_from=version)
    return past, reinstated


def _loads(job: TrainJob, framework: str, data: bytes) -> Any:
    """A stored model rebuilt from its bytes (scikit-learn's with the job's trusted types)."""
    options = {"trusted": job.trusted_types} if framework == "sklearn" and job.trusted_types else {}
    return get_format(framework, **options).loads(data)


def _labelled(
    report: Callable[[int, int | None, str], None] | None, label: str
) -> Callable[[int, int | None, str], None] | None:
    """``report`` with ``label`` in front of what it counts (which fit of several it is)."""
    if report is None:
        return None
    return lambda done, total, what: report(done, total, f"{label} {what}")


def _candidate_fingerprint(context: TrainContext, name: str) -> Callable[[], str]:
    """The job's fingerprint told apart per candidate, so a checkpoint resumes its own fit only."""

    def compute() -> str:
        return hashlib.sha256(f"{context.job_fingerprint()}:{name}".encode()).hexdigest()

    return compute


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


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


def lightgbm_alone(job: TrainJob) -> bool:
    """Whether a job needs LightGBM without scikit-learn: a LightGBM training whose parent
    model, if any, is a LightGBM one."""
    return job.trainer.get("kind") == "lightgbm" and job.parent_framework in (None, "lightgbm")


def _import_lightgbm_alone() -> None:
    """Import LightGBM without the scikit-learn it does not need for a :func:`lightgbm_alone` job.

    LightGBM imports scikit-learn (and SciPy) for its scikit-learn wrappers when it can:
    over a second of a worker's start, unused by such a job. Other jobs import what they
    need as they go.
    """
    if "sklearn" in sys.modules or "lightgbm" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # makes `import sklearn` fail
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        pass  # the trainer reports it
    finally:
        if sys.modules.get("sklearn", ...) is None:
            del sys.modules["sklearn"]


def _import_lightgbm(folder: Path) -> None:
    """Import LightGBM alone (:func:`_import_lightgbm_alone`) for a job that will use it so."""
    try:
        job = TrainJob.read(folder)
    except (OSError, ValueError, TypeError):
        return  # reported properly when the job runs
    if lightgbm_alone(job):
        _import_lightgbm_alone()


def _warm_up() -> None:
    """Train and score a tiny model through the job code, so that what a first call pays
    (imports done on first use, thread pools, LightGBM's first datasets) is paid now."""
    import tempfile

    import numpy as np

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"x": rng.normal(size=300), "c": rng.choice(["a", "b"], 300)})
    rows["y"] = (rows["x"] > 0).astype(int)
    with tempfile.TemporaryDirectory(prefix="evertrain-warm-up-") as tmp:
        folder = Path(tmp)
        write_parts(folder, {"train": rows[:200], "valid": rows[200:250], "holdout": rows[250:]})
        TrainJob(
            trainer={"kind": "lightgbm", "params": {"num_boost_round": 5}, "early_stopping_rounds": 2},
            task="binary",
            target="y",
            features=["x", "c"],
            seed=0,
            time_limit=60,
            fingerprint="warm-up",
            num_threads=1,
            metrics=["accuracy", "roc_auc", "log_loss"],
            report_progress=False,
        ).write(folder)
        execute_job(folder, log=lambda line: None)


def _wait_for_job(next_job: str | None = None) -> Path | None:
    """Do a job's imports and first calls ahead, then read its folder from standard input
    (None at end of input).

    ``next_job`` ``lightgbm``: started for a :func:`lightgbm_alone` job about to come (a
    one-off training's worker, started while its caller prepares the data): LightGBM is
    imported without scikit-learn, and there is no warm-up, which the job itself would wait for.
    """
    if next_job == LIGHTGBM_ALONE:
        _import_lightgbm_alone()
    else:
        import lightgbm  # noqa: F401  # with scikit-learn: the job's kind is not known yet

        with contextlib.suppress(Exception):  # a failed warm-up only means a slower first job
            _warm_up()
    line = sys.stdin.readline().strip()
    if not line:
        return None
    folder = Path(line)
    # The job's output goes to its log, as a worker started for it writes there.
    fd = os.open(folder / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return folder


def _tell_done(fd: int | None, *, last: bool = True, word: bytes = DONE_WORD) -> None:
    """Tell the parent, on the pipe it gave (``--done-fd``), that the job's outputs are written
    (and, after a latency probe finished apart, once more that its figure is); with
    :data:`SCORES_WORD`, that the holdout scores are (before the rest).

    The parent goes on from here instead of from this process's exit, which waits for the
    kernel to take down its memory (tens of milliseconds after a large training).
    """
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, word)
        if last:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    done_fd = None
    if args[:1] == [DONE_FD] and len(args) >= 2 and args[1].isdigit():
        done_fd, args = int(args[1]), args[2:]
        with contextlib.suppress(OSError):
            os.set_inheritable(done_fd, False)  # not for processes the job starts
    waiting = args[:1] == ["--wait"] and len(args) <= 2 and args[1:] in ([], [LIGHTGBM_ALONE])
    if len(args) != 1 and not waiting:
        sys.stderr.write(
            f"usage: python -m evertrain.train.worker [{DONE_FD} FD] JOB_DIR | --wait [{LIGHTGBM_ALONE}]\n"
        )
        return 2
    _watch_parent()
    # A worker kept warm waits for its job; what it reads then comes after a pause.
    use_system_arrow_allocator()
    if waiting:
        waited = _wait_for_job(*args[1:])
        if waited is None:
            return 0
        folder = waited
    else:
        folder = Path(args[0])
        _import_lightgbm(folder)

    def log(line: str) -> None:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        sys.stdout.flush()

    if waiting:
        pool = pa.default_memory_pool().backend_name
        log(f"worker {os.getpid()} was started ahead of this job; Arrow allocates from {pool}")

    # With a pipe to the parent, the job hands its outputs over before the end of its latency
    # probe, which then runs while the parent registers and judges the model.
    later: list[Callable[[], None]] = []
    tell_scores = functools.partial(_tell_done, done_fd, last=False, word=SCORES_WORD)
    try:
        execute_job(
            folder,
            log,
            later=later if done_fd is not None else None,
            scores_ready=None if done_fd is None else tell_scores,
        )
    except BaseException as exc:  # the child reports every failure, then exits non-zero
        traceback.print_exc()
        write_error(folder, exc)
        return 1
    sys.stdout.flush()
    _tell_done(done_fd, last=not later)
    if later:
        try:
            for work in later:
                work()
        except Exception:  # the parent finds no figure, and the latency gate says it was not measured
            traceback.print_exc()
        sys.stdout.flush()
        _tell_done(done_fd)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything the job writes is closed by now; skipping the interpreter's teardown (a
    # fifth of a second with pandas, LightGBM and scikit-learn loaded) hands the result
    # back sooner.
    os._exit(status)
