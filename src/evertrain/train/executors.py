"""Executors: where a training job runs, behind one interface, ``run(job_dir, time_limit, tables)``.

- ``inline``: in this process (tests, notebooks, benchmarks); the time limit is checked
  between boosting iterations only, since a running ``fit`` cannot be interrupted here.
- ``local``: a child process with a hard time limit and its output captured to the job's
  log; a crash or a timeout is a failed :class:`Outcome` with the error and the log
  tail, never an exception that leaves a half-registered version. A long-running process
  (``evertrain run``) asks for a worker to be kept warm (:meth:`LocalExecutor.keep_warm`):
  one is started after each job, its imports done by the time the next job comes.
- ``ray``: a Ray task on ``EVERTRAIN_RAY_ADDRESS`` (or a local Ray already started, or
  one started here); inputs and outputs travel as bytes, so it works on a cluster.

All three call :func:`evertrain.train.worker.execute_job`, hence give the same model
and the same metrics for the same job. ``tables`` are the job's data in memory: the inline
executor trains on them directly (``in_process``); the others read the job folder's files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evertrain.exceptions import UsageError
from evertrain.train.progress import PROGRESS_FILE
from evertrain.train.raycluster import connect
from evertrain.train.worker import (
    DATA_SUFFIX,
    DONE_FD,
    ERROR_FILE,
    JOB_FILE,
    LATENCY_FILE,
    LIGHTGBM_ALONE,
    LOG_FILE,
    MODEL_FILE,
    OUT_DIR,
    PARENT_FILE,
    RECALL_PREFIX,
    RESULT_FILE,
    SCORES_CLASSES_FILE,
    SCORES_FILE,
    SCORES_WORD,
    TrainJob,
    execute_job,
    lightgbm_alone,
    write_error,
)

#: The end of a job's log kept in its run record (the whole log goes to the artifact store).
LOG_TAIL_CHARS = 4000
#: After the time limit, a child gets this long to exit on SIGTERM before SIGKILL.
KILL_GRACE_SECONDS = 5.0
#: How often a job's end is looked for by its exit while waiting for the worker to say it is
#: done: only a worker that died while a process it started keeps its pipe open needs it.
EXIT_POLL_SECONDS = 0.5
#: How long a worker may take to finish its latency probe after handing its outputs over
#: (two predictions of a few hundred rows) before it is killed and the figure given up.
LATENCY_WAIT_SECONDS = 60.0


@dataclass
class Outcome:
    """What one execution of a job gave: a model and its result, or an error; always the log."""

    ok: bool
    seconds: float
    log: str
    model: bytes | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    holdout_scores: bytes | None = None
    #: The worker's exit, awaited in a thread when the worker said it was done before ending.
    exiting: threading.Thread | None = field(default=None, repr=False, compare=False)
    #: Called once, by :meth:`wait_for_worker` or :meth:`let_go`: what the executor does when
    #: the step that ran the job is over (the local executor starts the worker it keeps warm
    #: then).
    then: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: The latency probe's figure when the worker finishes the probe after handing its
    #: outputs over (the result says ``latency_pending``); calling it waits for the worker.
    latency: Callable[[], float | None] | None = field(default=None, repr=False, compare=False)

    @property
    def log_tail(self) -> str:
        return self.log[-LOG_TAIL_CHARS:]

    def wait_for_worker(self) -> None:
        """Return once the process that ran the job has ended (at once for most executors);
        the caller's use of the outcome is over."""
        self._release(wait=True)

    def let_go(self) -> None:
        """The caller's use of the outcome is over; unlike :meth:`wait_for_worker`, return
        without waiting for the worker's exit (it has handed everything over, and takes down
        its memory for tens of milliseconds): what follows it runs in the thread that awaits it."""
        self._release(wait=False)

    def _release(self, *, wait: bool) -> None:
        if self.latency is not None:
            self.latency()  # read while the worker's word is there to read
        then, self.then = self.then, None

        def after_exit() -> None:
            if self.exiting is not None:
                self.exiting.join()
            if then is not None:
                then()

        if wait or self.exiting is None or not self.exiting.is_alive():
            after_exit()
        else:
            threading.Thread(target=after_exit, name="evertrain-worker-after", daemon=True).start()


def collect(job_dir: Path, seconds: float, error: str | None = None) -> Outcome:
    """Read a job folder's outputs into an :class:`Outcome` (a missing result is a failure)."""
    out = job_dir / OUT_DIR
    log_path = job_dir / LOG_FILE
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if error is None and (out / ERROR_FILE).is_file():
        error = json.loads((out / ERROR_FILE).read_text())["error"]
    if error is None and (out / RESULT_FILE).is_file() and (out / MODEL_FILE).is_file():
        result = json.loads((out / RESULT_FILE).read_text())
        scores = (out / SCORES_FILE).read_bytes() if (out / SCORES_FILE).is_file() else None
        return Outcome(True, seconds, log, (out / MODEL_FILE).read_bytes(), result, holdout_scores=scores)
    return Outcome(False, seconds, log, error=error or "the training job ended without a model or an error")


def clear_outputs(job_dir: Path) -> None:
    """Remove the outputs of an earlier attempt (checkpoints stay: they are how it resumes)."""
    for name in (MODEL_FILE, RESULT_FILE, ERROR_FILE, SCORES_FILE, SCORES_CLASSES_FILE, LATENCY_FILE):
        with contextlib.suppress(FileNotFoundError):
            (job_dir / OUT_DIR / name).unlink()
    with contextlib.suppress(FileNotFoundError):
        (job_dir / PROGRESS_FILE).unlink()


class Executor(ABC):
    name: ClassVar[str]
    #: Runs the job in this process, so it takes the data tables from memory, not from files.
    in_process: ClassVar[bool] = False

    @abstractmethod
    def run(
        self,
        job_dir: Path,
        time_limit: float,
        tables: Mapping[str, Any] | None = None,
        started: Callable[[], None] | None = None,
        scores_ready: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run the job in ``job_dir``; never raises for a failed training, returns it.

        ``started`` is called once the job is in the hands of what runs it (a worker has it, a
        task is submitted), so that the caller's work beside the training begins then.
        ``scores_ready`` is called, by an executor whose worker can say so, once the worker
        has written the holdout's scores as its boosting summed them (``out/holdout_scores.npy``
        and its classes), while it still writes and checks its model, so that the caller's
        work on them overlaps the worker's last steps. They are provisional: the outputs hold
        the scores to judge, the same bytes unless the worker's checks failed. What the call
        raises is ignored (that work is then done later).
        """

    @contextlib.contextmanager
    def prepared(self, for_lightgbm: bool) -> Iterator[None]:
        """Get ready, while the block runs, for a job the block writes and runs
        (``for_lightgbm``: a LightGBM training that needs no scikit-learn, as
        :func:`evertrain.train.worker.lightgbm_alone` says). Most executors need nothing."""
        yield


class InlineExecutor(Executor):
    name = "inline"
    in_process = True

    def run(
        self,
        job_dir: Path,
        time_limit: float,
        tables: Mapping[str, Any] | None = None,
        started: Callable[[], None] | None = None,
        scores_ready: Callable[[], None] | None = None,
    ) -> Outcome:
        clear_outputs(job_dir)
        began = time.perf_counter()
        with open(job_dir / LOG_FILE, "a", encoding="utf-8") as log_file:

            def log(line: str) -> None:
                log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
                log_file.flush()

            if started is not None:
                started()
            try:
                execute_job(job_dir, log, tables)
            except Exception as exc:  # a failed training is an outcome, not a crash of the caller
                log(f"failed: {type(exc).__name__}: {exc}")
                write_error(job_dir, exc)
        return collect(job_dir, time.perf_counter() - began)


class _Spare:
    """A worker started ahead of need: imports done, waiting on standard input for its job folder.

    Used only in the environment and folder it was started in, so a job never runs with
    settings other than those its caller has.
    """

    def __init__(self, for_lightgbm: bool = False) -> None:
        self.env = dict(os.environ)
        self.cwd = os.getcwd()
        #: Started for a LightGBM job: its LightGBM was imported without scikit-learn.
        self.for_lightgbm = for_lightgbm
        self.proc, done = _start_worker(
            ["--wait"] + ([LIGHTGBM_ALONE] if for_lightgbm else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        #: The pipe on which the worker says its job is done, until a job takes it.
        self.done: int | None = done

    def give(self, job_dir: Path) -> tuple[subprocess.Popen[bytes], int] | None:
        """The worker, now running ``job_dir``, and the pipe on which it will say it is done;
        None if it cannot take the job (it is then stopped)."""
        if (
            self.done is not None
            and self.proc.poll() is None
            and self.env == dict(os.environ)
            and self.cwd == os.getcwd()
        ):
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(f"{job_dir}\n".encode())
                self.proc.stdin.close()
                done, self.done = self.done, None
                return self.proc, done
            except OSError:
                pass
        self.discard()
        return None

    def discard(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.done is not None:
            os.close(self.done)
            self.done = None


def _start_worker(args: list[str], **popen: Any) -> tuple[subprocess.Popen[bytes], int]:
    """A worker process (``python -m evertrain.train.worker ARGS``) and the read end of the
    pipe on which it says that its job succeeded (see :func:`evertrain.train.worker.main`)."""
    done, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evertrain.train.worker", DONE_FD, str(write), *args],
            pass_fds=(write,),
            process_group=0,  # its own process group, so a timeout kills what it started too
            **popen,
        )
    except BaseException:
        os.close(done)
        raise
    finally:
        os.close(write)
    return proc, done


class LocalExecutor(Executor):
    """A child Python process per job, killed at the time limit."""

    name = "local"
    _warm: ClassVar[bool] = False
    _spare: ClassVar[_Spare | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def keep_warm(cls, on: bool = True) -> None:
        """Keep (or stop keeping) one worker of this process started ahead for the next job."""
        with cls._lock:
            cls._warm = on
            spare, cls._spare = cls._spare, None
        if spare is not None:
            spare.discard()
        if on:
            cls._replenish()

    @classmethod
    def _replenish(cls) -> None:
        with cls._lock:
            if cls._warm and cls._spare is None:
                cls._spare = _Spare()

    @classmethod
    def _take_spare(cls) -> _Spare | None:
        with cls._lock:
            spare, cls._spare = cls._spare, None
        return spare

    @contextlib.contextmanager
    def prepared(self, for_lightgbm: bool) -> Iterator[None]:
        """Start the job's worker as the block starts, unless one waits already: its Python
        start and imports then overlap the caller's reading and windowing of the data, as the
        worker kept warm does for ``evertrain run`` (for a one-off ``evertrain train``, most of
        what it waits). A worker so started that no job took by the end of the block (the
        block failed first) is stopped, unless workers are kept warm."""
        cls = type(self)
        started = None
        with cls._lock:
            if cls._spare is None:
                started = cls._spare = _Spare(for_lightgbm)
        try:
            yield
        finally:
            if started is not None:
                with cls._lock:
                    unused = cls._spare is started and not cls._warm
                    if unused:
                        cls._spare = None
                if unused:
                    started.discard()

    def _start(self, job_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
        spare = self._take_spare()
        if spare is not None and spare.for_lightgbm:
            # Its LightGBM lacks the scikit-learn wrappers: only for a job that needs none.
            with contextlib.suppress(OSError, ValueError, TypeError):
                if not lightgbm_alone(TrainJob.read(job_dir)):
                    spare.discard()
                    spare = None
        given = spare.give(job_dir) if spare is not None else None
        if given is not None:
            return given
        with open(job_dir / LOG_FILE, "ab") as log_file:
            # Its own process group, so a timeout kills the child and anything it started; the
            # same session, so that the scheduler weighs the child's training thread against
            # this process's lower-priority side threads (with autogroups, priorities count
            # only within a session).
            return _start_worker(
                [str(job_dir)], stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @staticmethod
    def _wait(
        proc: subprocess.Popen[bytes], done: int, scores_ready: Callable[[], None] | None = None
    ) -> tuple[int, threading.Thread | None]:
        """The job's exit status: 0 as soon as the worker says it succeeded, with a thread that
        awaits its exit (which waits for the kernel to free its memory); else the status it
        ended with. ``scores_ready`` is called when the worker says its holdout scores are
        written (see :meth:`Executor.run`)."""
        while True:
            ready, _, _ = select.select([done], [], [], EXIT_POLL_SECONDS)
            if ready:
                word = os.read(done, 1)
                if word == SCORES_WORD:
                    if scores_ready is not None:
                        with contextlib.suppress(Exception):  # the caller does that work later instead
                            scores_ready()
                    continue
                if word:
                    exiting = threading.Thread(target=proc.wait, name="evertrain-worker-exit", daemon=True)
                    exiting.start()
                    return 0, exiting
                return proc.wait(), None  # the pipe closed without a word: the worker ended
            if proc.poll() is not None:
                return proc.returncode, None

    def run(
        self,
        job_dir: Path,
        time_limit: float,
        tables: Mapping[str, Any] | None = None,
        started: Callable[[], None] | None = None,
        scores_ready: Callable[[], None] | None = None,
    ) -> Outcome:
        clear_outputs(job_dir)
        began = time.perf_counter()
        proc, done = self._start(job_dir)
        expired = threading.Event()
        ended = threading.Event()

        def watchdog() -> None:
            if not ended.wait(time_limit):
                expired.set()
                self._stop(proc, ended)

        # A blocking wait (on the worker's word, or its end) plus a watchdog: Popen.wait(timeout)
        # polls, and notices the end of a job up to 50 ms late.
        threading.Thread(target=watchdog, name="evertrain-job-watchdog", daemon=True).start()
        try:
            if started is not None:
                started()
            code, exiting = self._wait(proc, done, scores_ready)
        except BaseException:
            # Ctrl-C (or any exit) of the caller: the worker is in its own process group, so
            # the terminal's SIGINT never reached it; kill it rather than leave it training.
            ended.set()
            os.close(done)
            self._kill(proc)
            raise
        ended.set()
        seconds = time.perf_counter() - began
        if expired.is_set() or code != 0:
            os.close(done)
            self._replenish()  # nothing of this job is judged
        if expired.is_set():
            return collect(
                job_dir,
                seconds,
                error=f"training timed out after its limit of {time_limit:g}s and was killed",
            )
        if code != 0:
            outcome = collect(job_dir, seconds)
            detail = (
                outcome.error if outcome.error and not outcome.error.startswith("the training job") else None
            )
            return collect(
                job_dir,
                seconds,
                error=detail
                or f"the training process exited with code {code}: "
                f"{outcome.log_tail.strip().splitlines()[-1] if outcome.log.strip() else 'no output'}",
            )
        outcome = collect(job_dir, seconds)
        if outcome.ok and (outcome.result.get("holdout_scores") or {}).get("latency_pending"):
            outcome.latency = _LatencyLater(done, proc, job_dir / OUT_DIR / LATENCY_FILE)
        else:
            os.close(done)
        outcome.exiting = exiting
        # The next warm worker starts when the caller is done with this job (the version
        # registered and judged): its imports and warm-up, a core's work for a second or
        # two, would otherwise run beside the gates and slow them.
        outcome.then = self._replenish
        return outcome

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL to the job's process group at once, and reap it (its run stays resumable)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_SECONDS)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], ended: threading.Event) -> None:
        """SIGTERM to the job's process group, SIGKILL if it has not ended after the grace time."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if not ended.wait(KILL_GRACE_SECONDS):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


class _LatencyLater:
    """The figure of a latency probe the worker finishes after handing its outputs over (see
    :func:`~evertrain.train.worker.execute_job`): read once the worker says on its pipe that
    it is written; None when the worker ends without it, or is killed after
    :data:`LATENCY_WAIT_SECONDS` (the latency gate then says it was not measured)."""

    def __init__(self, fd: int, proc: subprocess.Popen[bytes], path: Path) -> None:
        self._fd, self._proc, self._path = fd, proc, path
        self._lock = threading.Lock()
        self._read = False
        self._value: float | None = None

    def __call__(self) -> float | None:
        with self._lock:
            if not self._read:
                self._read = True
                try:
                    self._await_word()
                finally:
                    os.close(self._fd)
                with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                    self._value = float(json.loads(self._path.read_text())["ms_per_row"])
            return self._value

    def _await_word(self) -> None:
        deadline = time.monotonic() + LATENCY_WAIT_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._fd], [], [], EXIT_POLL_SECONDS)
            if ready or self._proc.poll() is not None:
                return  # its word, or the pipe closed, or it ended
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)


def job_inputs(job_dir: Path) -> dict[str, bytes]:
    """A job folder's inputs (job file, data, parent model, earlier champions) as bytes, to run
    it on another machine."""
    return {
        p.name: p.read_bytes()
        for p in job_dir.iterdir()
        if p.is_file()
        and (p.suffix == DATA_SUFFIX or p.name in (JOB_FILE, PARENT_FILE) or p.name.startswith(RECALL_PREFIX))
    }


def run_job_from_bytes(files: dict[str, bytes], checkpoint_dir: str | None) -> dict[str, bytes]:
    """Run a job given as bytes (a Ray task, a Tune trial): its folder rebuilt, its outputs as bytes."""
    with tempfile.TemporaryDirectory(prefix="evertrain-ray-") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        job = json.loads(files[JOB_FILE])
        # The checkpoint folder is used where this node can reach it (a local Ray, a shared
        # disk); elsewhere the job checkpoints into its temporary folder.
        if checkpoint_dir and Path(checkpoint_dir).parent.is_dir():
            job["checkpoint_dir"] = checkpoint_dir
        else:
            job["checkpoint_dir"] = None
        (folder / JOB_FILE).write_text(json.dumps(job))
        buffer = io.StringIO()

        def log(line: str) -> None:
            buffer.write(f"{time.strftime('%H:%M:%S')} {line}\n")

        try:
            execute_job(folder, log)
        except Exception as exc:
            log(f"failed: {type(exc).__name__}: {exc}")
            write_error(folder, exc)
        out = {LOG_FILE: buffer.getvalue().encode()}
        for name in (MODEL_FILE, RESULT_FILE, ERROR_FILE, SCORES_FILE):
            path = folder / OUT_DIR / name
            if path.is_file():
                out[f"{OUT_DIR}/{name}"] = path.read_bytes()
        return out


class RayExecutor(Executor):
    """A Ray task per job; Ray is initialised on first use if the caller has not done it."""

    name = "ray"
    _remote: ClassVar[Any] = None

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def connect(self) -> Any:
        """Ray, initialised (:func:`evertrain.train.raycluster.connect`), with the job task defined."""
        ray = connect(self.address)
        if RayExecutor._remote is None:
            RayExecutor._remote = ray.remote(max_retries=0)(run_job_from_bytes)
        return ray

    def run(
        self,
        job_dir: Path,
        time_limit: float,
        tables: Mapping[str, Any] | None = None,
        started: Callable[[], None] | None = None,
        scores_ready: Callable[[], None] | None = None,
    ) -> Outcome:
        ray = self.connect()
        clear_outputs(job_dir)
        inputs = job_inputs(job_dir)
        job = json.loads(inputs[JOB_FILE])
        began = time.perf_counter()
        ref = RayExecutor._remote.remote(inputs, job.get("checkpoint_dir"))
        if started is not None:
            started()
        try:
            produced: dict[str, bytes] = ray.get(ref, timeout=time_limit)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            return collect(
                job_dir,
                time.perf_counter() - began,
                error=f"training timed out after its limit of {time_limit:g}s and was cancelled",
            )
        except ray.exceptions.RayError as exc:
            return collect(job_dir, time.perf_counter() - began, error=f"the Ray task failed: {exc}")
        (job_dir / OUT_DIR).mkdir(exist_ok=True)
        for name, data in produced.items():
            if name == LOG_FILE:
                with open(job_dir / LOG_FILE, "ab") as fh:
                    fh.write(data)
            else:
                (job_dir / name).write_bytes(data)
        return collect(job_dir, time.perf_counter() - began)


EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (InlineExecutor, LocalExecutor, RayExecutor)}


def get_executor(name: str) -> Executor:
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise UsageError(f"unknown executor {name!r}; known: {', '.join(sorted(EXECUTORS))}") from None
