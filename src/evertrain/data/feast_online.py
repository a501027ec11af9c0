"""Online features from Feast for serving: one long-lived worker in Feast's environment, over a pipe.

Feast cannot share evertrain's interpreter (it pins pandas below ours), and starting an
interpreter that imports Feast takes seconds, so serving keeps one worker process
(:mod:`evertrain.data.feast_worker`, ``--online``) for its whole life: it holds the open
``FeatureStore`` and answers ``get_online_features`` for the entity keys of each request,
one JSON line in, one JSON line out. Requests are pipelined: any thread sends with an id
and gets a future that a reader thread completes, so a slow read holds up no other
request's sending and no event loop. A worker that dies is started again in the
background when the next read finds it gone: reads fail at once (the server answers 503)
until it is up, so no request waits seconds for Feast's import. One that will not start
answers every read with the reason until it does, tried again at most every
``RESTART_PAUSE`` seconds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from evertrain.data.feast_source import WORKER
from evertrain.data.source_base import in_project
from evertrain.exceptions import StoreError, UsageError

log = logging.getLogger("evertrain.feast")

#: Seconds the worker may take to import Feast and open the repo: seconds usually, a minute on a busy machine.
START_TIMEOUT = 120.0
#: Seconds between two tries to start a worker that failed to start (each try costs a Feast import).
RESTART_PAUSE = 10.0
#: What a read is told while the worker starts.
STARTING = "feast online features: the worker is starting; try again shortly"


@dataclass(frozen=True)
class Answer:
    """Feast's online features for some entity rows: one list per feature, and the rows it lacks."""

    features: dict[str, list[Any]]
    missing: list[int]


class OnlineFeatures:
    """A Feast online store read through a worker process (started by :meth:`start` or the first read)."""

    def __init__(
        self,
        repo: str,
        *,
        features: list[str] | None = None,
        feature_service: str | None = None,
        entity_keys: list[str] | None = None,
        python: str | None = None,
        resident: bool = True,
    ) -> None:
        self.repo = repo
        # False: the worker only tells the entity keys and features, then stops (no online reads)
        self.resident = resident
        self._described = False
        self.features = features
        self.feature_service = feature_service
        self.entity_keys = entity_keys
        self.python = python or sys.executable
        self.keys_: dict[str, str] = {}
        self.names_: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._pending: dict[int, Future[Answer]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()  # sending, the pending table, the state of a start
        self._starting = False  # a start is under way (no lock is held while Feast starts)
        self._closed = False
        self._error: str | None = None
        self._failed_at = -RESTART_PAUSE
        self._stderr: deque[str] = deque(maxlen=20)

    # -- life ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        if not self.resident:
            return self._described
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def error(self) -> str | None:
        """Why the worker is not running, when its last start failed."""
        return self._error

    def start(self) -> None:
        """Start the worker unless it runs, and wait for it; raises :class:`StoreError` (or
        :class:`UsageError` for a missing Python) with Feast's reason when it cannot, or when
        another start is under way."""
        self._start(force=True)

    def ensure(self) -> None:
        """Return if the worker runs; otherwise start it in the background (a failed start is
        tried again at most every ``RESTART_PAUSE`` s) and raise :class:`StoreError` at once,
        naming why it is not there, so that no caller waits for Feast to start."""
        if self.ready:
            return
        with self._lock:
            if self.ready:
                return
            why = self._error
            paused = why is not None and time.monotonic() - self._failed_at < RESTART_PAUSE
            kick = not self._starting and not paused
        if kick:
            threading.Thread(target=self._start_quietly, name="evertrain-feast-start", daemon=True).start()
        raise StoreError(why or STARTING)

    def _start_quietly(self) -> None:
        try:
            self._start()
        except (StoreError, UsageError) as exc:
            log.warning("feast online features did not start: %s", exc.message)

    def _start(self, force: bool = False) -> None:
        with self._lock:
            if self.ready:
                return
            if self._starting:
                raise StoreError(STARTING)
            if self._error is not None and not force and time.monotonic() - self._failed_at < RESTART_PAUSE:
                raise StoreError(self._error)
            self._starting = True
        try:
            proc, keys, names = self._spawn()
        except BaseException as exc:
            with self._lock:
                self._starting = False
                if isinstance(exc, (StoreError, UsageError)):  # Feast's reason, kept for the reads
                    self._error, self._failed_at = exc.message, time.monotonic()
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self.keys_, self.names_ = keys, names
                if self.resident:
                    self._proc = proc
                else:
                    self._described = True
            self._error, self._starting = None, False
        if closed or not self.resident:  # closed while it started: it is nobody's; or not kept
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            if not closed:
                log.info("feast entity keys read from %s: %s (no online reads)", self.repo, ", ".join(keys))
            return
        threading.Thread(target=self._answers, args=(proc,), name="evertrain-feast", daemon=True).start()
        log.info("feast online reader started on %s: keys %s", self.repo, ", ".join(keys))

    def _spawn(self) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
        """A worker that answered its first line: the process, its entity keys and its features."""
        self._stderr.clear()
        config = {
            "repo": self.repo,
            "features": self.features,
            "feature_service": self.feature_service,
            "entity_keys": self.entity_keys,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="evertrain-feast-", delete=False) as f:
            json.dump(config, f)
        env = {**os.environ, "FEAST_USAGE": "False", "DO_NOT_TRACK": "1"}
        try:
            proc = subprocess.Popen(
                [self.python, str(WORKER), "--online", f.name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                env=env,
            )
        except FileNotFoundError:
            os.unlink(f.name)
            raise UsageError(
                f"feast online features: no Python at {self.python!r} (set serving.feast.python or "
                "data.source.python to the python of an environment with feast installed)"
            ) from None
        assert proc.stdout is not None and proc.stderr is not None
        threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True).start()
        first = _line_within(proc.stdout, START_TIMEOUT)
        os.unlink(f.name)
        described = _json(first)
        if described is None or "keys" not in described:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            why = described.get("error") if described else None
            if why is None:
                why = self._stderr[-1] if self._stderr else f"no answer within {START_TIMEOUT:.0f}s"
            if why.startswith(("ModuleNotFoundError", "ImportError")):
                raise UsageError(
                    f"feast online features: {why} in {self.python} (set serving.feast.python or "
                    "data.source.python to the python of an environment with `pip install feast`)"
                )
            raise StoreError(f"feast online features: Feast failed on repo {self.repo}: {why}")
        return proc, dict(described["keys"]), list(described["features"])

    def close(self) -> None:
        with self._lock:
            proc, self._proc, self._closed = self._proc, None, True
        if proc is not None:
            _stop(proc)

    # -- reading ---------------------------------------------------------------------------

    def read(self, entities: dict[str, list[Any]]) -> Future[Answer]:
        """The online features of the entity rows ``entities`` (one list per key), as a future."""
        if not self.resident:
            raise UsageError("feast online features: online reads are off (serving.feast.online: false)")
        future: Future[Answer] = Future()
        self.ensure()
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise StoreError("feast online features: the worker stopped; the next read starts another")
            rid = next(self._ids)
            self._pending[rid] = future
            try:
                proc.stdin.write(json.dumps({"id": rid, "entities": entities}) + "\n")
                proc.stdin.flush()
            except OSError as exc:
                self._pending.pop(rid, None)
                raise StoreError(f"feast online features: the worker is gone ({exc})") from None
        return future

    def forget(self, future: Future[Answer]) -> None:
        """Drop a read nobody waits for any more (its caller timed out)."""
        with self._lock:
            for rid, pending in list(self._pending.items()):
                if pending is future:
                    del self._pending[rid]

    def _answers(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                self._settle(_json(line))
        # the worker ended: fail what waits on it; the next read starts another
        why = self._stderr[-1] if self._stderr else f"exit {proc.wait()}"
        with self._lock:
            if self._proc is proc:
                self._proc = None
            waiting, self._pending = self._pending, {}
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # a broken pipe: nothing was left to send
                    proc.stdin.close()
        for future in waiting.values():
            future.set_exception(StoreError(f"feast online features: the worker stopped: {why}"))

    def _settle(self, answer: dict[str, Any] | None) -> None:
        if answer is None:
            return
        with self._lock:
            future = self._pending.pop(answer.get("id", -1), None)
        if future is None:
            return
        if "error" in answer:
            future.set_exception(StoreError(f"feast online features: {answer['error']}"))
        else:
            future.set_result(Answer(answer["features"], list(answer.get("missing", ()))))

    def _drain(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                line = line.rstrip()
                if line:
                    self._stderr.append(line)
                    log.debug("feast: %s", line)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a worker: end of input ends its loop; one that does not end within 5 s is killed."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    # its stdout and stderr are closed by the threads that read them, at their end


def _json(line: str | None) -> dict[str, Any] | None:
    if not line:
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _line_within(stream: IO[str], timeout: float) -> str | None:
    """The next line of ``stream``, or ``None`` if none comes within ``timeout`` seconds or it ends."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else None


def online_features(feast: Any, base: Path | None = None) -> OnlineFeatures:
    """The reader of a :class:`evertrain.spec.FeastServingSpec` (repo and python resolved from ``base``)."""
    python = feast.python and in_project(feast.python, base, command=True)
    return OnlineFeatures(
        in_project(str(feast.repo), base),
        features=feast.features,
        feature_service=feast.feature_service,
        entity_keys=feast.entity_keys,
        python=python,
        resident=feast.online,
    )
