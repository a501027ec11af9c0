"""Clocks: the wall clock, and a manual one that tests and the demo move by hand.

Everything that depends on time (schedules, cooldowns, windows, label arrival) takes a
clock, so months of production can be replayed in seconds.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()

    def __call__(self) -> float:
        return self.now()

    def sleep(self, seconds: float, until: threading.Event | None = None) -> None:
        """Wait ``seconds``, or less if ``until`` is set meanwhile (a stop request)."""
        if until is not None:
            until.wait(max(0.0, seconds))
        else:
            time.sleep(max(0.0, seconds))


class ManualClock(Clock):
    """A clock that moves only when told to; ``sleep`` advances it instantly.

    >>> clock = ManualClock(100.0)
    >>> clock.sleep(5); clock.now()
    105.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def set(self, value: float) -> None:
        with self._lock:
            self._now = float(value)

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += float(seconds)
            return self._now

    def sleep(self, seconds: float, until: threading.Event | None = None) -> None:
        self.advance(max(0.0, seconds))
