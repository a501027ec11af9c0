"""Online features from Feast for serving: one long-lived worker in Feast's environment, over a pipe.

Feast cannot share evertrain's interpreter (it pins pandas below ours), and starting an
interpreter that imports Feast takes seconds, so serving keeps one worker process
(:mod:`evertrain.data.feast_worker`, ``--online``) for its whole life: it holds the open
``FeatureStore`` and answers ``get_online_features`` for the entity keys of each request,
one JSON line in, one JSON line out. Requests are pipelined: any thread sends with an id
and gets a future that a reader thread completes, so a slow read holds up no other
request's sending and no event loop. A worker that dies is started again by the next read;
one that will not start answers every read with the reason until it does.
"""

from __future__ import annotations

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

from evertrain.data.feast_source import WORKER, in_project
from evertrain.exceptions import StoreError, UsageError

log = logging.getLogger("evertrain.feast")

#: Seconds the worker may take to import Feast and open the repo: seconds usually, a minute on a busy machine.
START_TIMEOUT = 120.0
#: Seconds between two tries to start a worker that failed to start (each try costs a Feast import).
RESTART_PAUSE = 10.0


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
    ) -> None:
        self.repo = repo
        self.features = features
        self.feature_service = feature_service
        self.entity_keys = entity_keys
        self.python = python or sys.executable
        self.keys_: dict[str, str] = {}
        self.names_: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._pending: dict[int, Future[Answer]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()  # sending, starting, the pending table
        self._error: str | None = None
        self._failed_at = -RESTART_PAUSE
        self._stderr: deque[str] = deque(maxlen=20)

    # -- life ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def error(self) -> str | None:
        """Why the worker is not running, when its last start failed."""
        return self._error

    def start(self) -> None:
        """Start the worker unless it runs; raises :class:`StoreError` (or :class:`UsageError` for a
        missing Python) with Feast's reason when it cannot."""
        with self._lock:
            self._start_locked(force=True)

    def ensure(self) -> None:
        """Start the worker unless it runs, retrying a failed start at most every ``RESTART_PAUSE`` s."""
        with self._lock:
            self._start_locked()

    def _start_locked(self, force: bool = False) -> None:
        if self.ready:
            return
        if self._error is not None and not force and time.monotonic() - self._failed_at < RESTART_PAUSE:
            raise StoreError(self._error)
        try:
            self._spawn()
            self._error = None
        except (StoreError, UsageError) as exc:
            self._error = exc.message
            self._failed_at = time.monotonic()
            raise

    def _spawn(self) -> None:
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
        self.keys_ = dict(described["keys"])
        self.names_ = list(described["features"])
        self._proc = proc
        threading.Thread(target=self._answers, args=(proc,), name="evertrain-feast", daemon=True).start()
        log.info("feast online reader started on %s: keys %s", self.repo, ", ".join(self.keys_))

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the worker's loop ends at end of input
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # its stdout and stderr are closed by the threads that read them, at their end

    # -- reading ---------------------------------------------------------------------------

    def read(self, entities: dict[str, list[Any]]) -> Future[Answer]:
        """The online features of the entity rows ``entities`` (one list per key), as a future."""
        future: Future[Answer] = Future()
        with self._lock:
            self._start_locked()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
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
    )
