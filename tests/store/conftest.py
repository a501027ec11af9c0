"""Helper processes for the store's concurrency and kill tests (see ``_worker.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from store_procs import Worker


@pytest.fixture
def workers() -> Iterator[Callable[[], Worker]]:
    """A factory of helper processes; all of them are ended after the test."""
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
