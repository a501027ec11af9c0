"""These tests run on one SQLite store in a project folder, on a hand-moved clock."""

from __future__ import annotations

import pytest

from evertrain.store import Store


@pytest.fixture
def store(project_store: Store) -> Store:
    return project_store
