"""Retrying an operation that may fail for a passing reason, with exponential backoff.

One policy object for every layer: a write that lost a race in the metadata store, a
webhook that answered 503, a log file on object storage that was briefly unreachable.
Built on ``tenacity``, so the stop, wait and retry rules are its well-tested ones.

>>> calls = []
>>> def flaky() -> str:
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionError("not yet")
...     return "done"
>>> waits: list[float] = []
>>> policy = Retry(attempts=5, base_delay=0.1, max_delay=1.0, retry_on=ConnectionError, jitter=False,
...                sleep=waits.append)
>>> policy.call(flaky), waits
('done', [0.1, 0.2])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from evertrain.exceptions import UsageError

T = TypeVar("T")

#: What may be retried: exception types, or a predicate on the exception raised.
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class Retry:
    """How to retry: how often, how long to wait between tries, and on which errors.

    ``attempts``
        Tries in all, the first included (``None``: no limit by count).
    ``within``
        Seconds after the first try beyond which no new try starts (``None``: no limit
        by time). At least one of ``attempts`` and ``within`` must be set.
    ``base_delay``, ``max_delay``
        The wait before the k-th retry is ``base_delay * 2 ** (k - 1)``, at most
        ``max_delay`` seconds.
    ``retry_on``
        An exception type, a tuple of them, or a predicate on the exception; any other
        exception is raised at once.
    ``jitter``
        Wait a uniformly random time up to that delay instead ("full jitter"), so that
        several processes that failed together do not retry together.
    ``sleep``
        How to wait; tests pass one that records the waits.

    When the tries run out the last exception is raised as it was, for the caller to
    name the operation in its own error.
    """

    attempts: int | None = 3
    within: float | None = None
    base_delay: float = 0.1
    max_delay: float = 5.0
    retry_on: RetryOn = OSError
    jitter: bool = True
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts is None and self.within is None:
            raise UsageError("Retry: set attempts or within (or both), or it would retry forever")
        if self.attempts is not None and self.attempts < 1:
            raise UsageError(f"Retry: attempts must be at least 1, got {self.attempts!r}")
        if self.within is not None and self.within < 0:
            raise UsageError(f"Retry: within must be at least 0 seconds, got {self.within!r}")
        if not 0 <= self.base_delay <= self.max_delay:
            raise UsageError(
                f"Retry: need 0 <= base_delay <= max_delay, got {self.base_delay!r} and {self.max_delay!r}"
            )

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, tried again after a retryable exception until it returns or the tries run out.

        The first try runs on its own: tenacity (and the policy built from it) is loaded
        only once a try has failed and may be retried, so that the usual case, a write
        that goes through at once, costs a command no more than the write.
        """
        started = time.monotonic()
        try:
            return fn()
        except BaseException as exc:
            if self.attempts == 1 or not self.retries(exc):
                raise
            first = exc
        return self._retrying(fn, first, started)

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this policy tries again after."""
        if isinstance(self.retry_on, type | tuple):
            return isinstance(exc, self.retry_on)
        return bool(self.retry_on(exc))

    def _retrying(self, fn: Callable[[], T], first: BaseException, started: float) -> T:
        """The tries after ``first`` failed (``started`` is when that first try began)."""
        import tenacity  # here, not at the top: a quick command that never retries need not load it

        stops: list[tenacity.stop.stop_base] = []
        if self.attempts is not None:
            stops.append(tenacity.stop_after_attempt(self.attempts))
        if self.within is not None:
            # tenacity's clock starts now; the first try's time counts against ``within`` too
            stops.append(tenacity.stop_before_delay(max(0.0, self.within - (time.monotonic() - started))))
        wait_kind = tenacity.wait_random_exponential if self.jitter else tenacity.wait_exponential
        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(*stops),
            wait=wait_kind(multiplier=self.base_delay, max=self.max_delay),
            retry=tenacity.retry_if_exception(self.retries),
            sleep=self.sleep,
            reraise=True,
        )
        failed: list[BaseException] = [first]

        def attempt() -> T:
            # tenacity's first attempt is the try that already failed: it fails again at
            # once with the same error, and the waits and the count go on from there.
            if failed:
                raise failed.pop()
            return fn()

        return retrying(attempt)


__all__ = ["Retry", "RetryOn"]
