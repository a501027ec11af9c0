"""How far a training job has come: told by the trainer, shown by whoever waits for it.

A trainer reports each iteration through its context (:meth:`TrainContext.progress
<evertrain.train.context.TrainContext.progress>`: boosting rounds, LoRA steps). The job
writes the newest report to ``progress.json`` in its folder, at most
:data:`WRITE_EVERY_SECONDS` apart and once more when the job ends, whatever executor runs
it; :func:`watch` polls that file for a caller that wants to show it (``evertrain train``
on a terminal). The folder is the one thing a job and its caller share already, across a
process or not, and a file nobody reads costs a few small writes a second.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write = ProgressWriter(folder / PROGRESS_FILE)
>>> for done in range(1, 4):
...     write(done, 300, "boosting round")
>>> write.close()
>>> read_progress(folder)
Progress(what='boosting round', done=3, total=300)
>>> read_progress(folder).text()
'boosting round 3/300'
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evertrain._background import repeating

#: The progress file in a job folder.
PROGRESS_FILE = "progress.json"
#: Shortest time between two writes of the progress file: a person sees a few updates a
#: second, and a boosting round can take well under a millisecond.
WRITE_EVERY_SECONDS = 0.2
#: How often :func:`watch` looks at the file.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Progress:
    """One report: ``done`` iterations of ``what`` out of ``total`` planned (None: not known),
    or, without ``done``, the stage a training is in (``reading the data``)."""

    what: str
    done: int | None = None
    total: int | None = None

    def text(self) -> str:
        if self.done is None:
            return self.what
        return f"{self.what} {self.done}" + ("" if self.total is None else f"/{self.total}")


Listener = Callable[[Progress], None]


class ProgressWriter:
    """Writes reports to a progress file, at most every ``every`` seconds; :meth:`close`
    writes the newest one if it was held back, so the file ends on the last state."""

    def __init__(
        self, path: Path, every: float = WRITE_EVERY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.every = every
        self.clock = clock
        self._written_at: float | None = None
        self._pending: Progress | None = None

    def __call__(self, done: int, total: int | None, what: str) -> None:
        self._pending = Progress(what, int(done), None if total is None else int(total))
        now = self.clock()
        if self._written_at is None or now - self._written_at >= self.every:
            self._write(now)

    def close(self) -> None:
        if self._pending is not None:
            self._write(self.clock())

    def _write(self, now: float) -> None:
        report, self._pending = self._pending, None
        if report is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # Not flushed to disk: it is for the eyes of whoever watches, and a reader sees the
        # whole file or the one before it (rename).
        with contextlib.suppress(OSError):  # a report that cannot be written never fails a training
            tmp.write_text(json.dumps({"what": report.what, "done": report.done, "total": report.total}))
            os.replace(tmp, self.path)
        self._written_at = now


def read_progress(job_dir: Path) -> Progress | None:
    """The newest report in ``job_dir``, or None (none yet, or a file this version cannot read)."""
    try:
        data = json.loads((job_dir / PROGRESS_FILE).read_text())
        done, total = data.get("done"), data.get("total")
        return Progress(
            str(data["what"]), None if done is None else int(done), None if total is None else int(total)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@contextlib.contextmanager
def watch(job_dir: Path, listener: Listener | None, every: float = POLL_SECONDS) -> Iterator[None]:
    """Call ``listener`` with each new report of the job in ``job_dir`` while the block runs,
    and once more after it with the last one (so a short job's end is seen too)."""
    if listener is None:
        yield
        return
    seen: list[Progress | None] = [None]

    def look() -> None:
        report = read_progress(job_dir)
        if report is not None and report != seen[0]:
            seen[0] = report
            listener(report)

    with repeating(every, look, "evertrain-progress"):
        yield
    look()


__all__ = [
    "POLL_SECONDS",
    "PROGRESS_FILE",
    "WRITE_EVERY_SECONDS",
    "Listener",
    "Progress",
    "ProgressWriter",
    "read_progress",
    "watch",
]
