"""Work done beside the main work: ahead of need, repeated while a block runs, at a lower priority.

:func:`ahead` starts a call in a thread of its own and gives its future: what waits on a
file (reading a training's source) goes on while the caller does its own work.
:func:`repeating` calls a function every few seconds in a thread of its own while a block
runs (a lease's heartbeat, a look at a job's progress).

Work done beside a training (scoring, snapshots) runs at a lower priority than the training.
A training uses one core; the work beside it is meant for the others. When there are more
busy threads than cores, the scheduler shares the cores between them evenly, and the
training, which everything else waits for, loses its share. Raising the nice value of the
side thread (Linux applies it per thread) keeps the training's core its own while leaving
idle cores to the side work. Lowering a priority needs no privilege; where it is not
supported nothing changes. Where the kernel groups scheduling by session (autogroups),
nice values only count within a session, which is why a training worker is started in
its own process group but in its parent's session.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

#: Nice value added to a side thread: the training gets about ten times its CPU share.
SIDE_NICENESS = 10


def yield_to_training() -> None:
    """Lower the calling thread's CPU priority (call it first thing in a side thread)."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + SIDE_NICENESS))


@contextlib.contextmanager
def repeating(seconds: float, work: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``work`` every ``seconds`` in a daemon thread called ``name`` while the block runs.

    The first call comes ``seconds`` after the start; the thread is stopped and joined when
    the block ends (a call under way is finished first), so nothing of it outlives the block.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            work()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def ahead(work: Callable[[], T], name: str) -> Future[T]:
    """Start ``work`` in a daemon thread called ``name``; its future holds what it returns or
    raises (raised again by ``result()``, where the caller would have called it)."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(work())
        except BaseException as exc:  # handed to whoever waits for the result
            done.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done
