"""These tests run on one SQLite store in a project folder, on a hand-moved clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from evertrain.store import Store


@pytest.fixture
def store(project_store: Store) -> Store:
    return project_store


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[Any]:
    """A local Ray, started once for the tests that run jobs on it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
