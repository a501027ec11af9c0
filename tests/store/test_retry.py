"""The retry policy every layer uses: backoff, limits, and which errors are worth a retry."""

from __future__ import annotations

import pytest

from evertrain.exceptions import UsageError
from evertrain.store.retry import Retry


class _Flaky:
    """Fails ``failures`` times with ``error``, then returns how many calls it took."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


def test_backoff_doubles_up_to_the_cap() -> None:
    waits: list[float] = []
    policy = Retry(
        attempts=6, base_delay=0.5, max_delay=3.0, retry_on=OSError, jitter=False, sleep=waits.append
    )
    assert policy.call(_Flaky(5, OSError("down"))) == 6
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jittered_waits_stay_under_the_exponential_bound() -> None:
    waits: list[float] = []
    policy = Retry(attempts=5, base_delay=0.1, max_delay=0.3, retry_on=OSError, sleep=waits.append)
    policy.call(_Flaky(4, OSError("busy")))
    bounds = [0.1, 0.2, 0.3, 0.3]
    assert len(waits) == 4 and all(0 <= w <= b for w, b in zip(waits, bounds, strict=True))


def test_the_last_error_is_raised_as_it_was_when_tries_run_out() -> None:
    waits: list[float] = []
    flaky = _Flaky(10, ConnectionError("refused"))
    with pytest.raises(ConnectionError, match="refused"):
        Retry(attempts=3, retry_on=ConnectionError, sleep=waits.append).call(flaky)
    assert flaky.calls == 3 and len(waits) == 2


def test_other_errors_are_not_retried() -> None:
    flaky = _Flaky(1, KeyError("bug"))
    with pytest.raises(KeyError):
        Retry(attempts=5, retry_on=OSError, sleep=lambda _s: None).call(flaky)
    assert flaky.calls == 1
    # a predicate chooses by the error's content, not only its type
    locked = Retry(attempts=5, retry_on=lambda e: "locked" in str(e), sleep=lambda _s: None)
    assert locked.call(_Flaky(2, RuntimeError("database is locked"))) == 3
    with pytest.raises(RuntimeError, match="disk full"):
        locked.call(_Flaky(2, RuntimeError("disk full")))


def test_a_time_limit_stops_retrying() -> None:
    # the sleeps are real but tiny: the limit is on time, so time must pass
    flaky = _Flaky(10_000, OSError("down"))
    with pytest.raises(OSError):
        Retry(attempts=None, within=0.05, base_delay=0.01, max_delay=0.01, jitter=False).call(flaky)
    assert 2 <= flaky.calls < 10_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": None}, "retry forever"),
        ({"attempts": 0}, "attempts must be at least 1, got 0"),
        ({"within": -1.0}, "within must be at least 0"),
        ({"base_delay": 2.0, "max_delay": 1.0}, "base_delay <= max_delay, got 2.0 and 1.0"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_a_slow_first_try_counts_against_the_time_limit() -> None:
    """The limit runs from the first try's start: a first try that used it all is not retried."""
    import time

    calls: list[float] = []

    def slow() -> None:
        calls.append(time.monotonic())
        time.sleep(0.06)
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        Retry(attempts=None, within=0.05, base_delay=0.001, max_delay=0.001, jitter=False).call(slow)
    assert len(calls) == 1
