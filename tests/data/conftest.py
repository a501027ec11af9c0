"""Fixtures of these tests: a clean environment and a store in a temporary project folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from evertrain.store import Store


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EVERTRAIN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVERTRAIN_ACTOR", "tester")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_767_225_600.0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def store(project: Path, clock: Clock) -> Iterator[Store]:
    opened = Store.for_project(project, clock=clock).open()
    yield opened
    opened.close()
