"""A demo project, run once per session, that the face tests (demo, report, dashboard) share."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The fast demo, run through the real HTTP app into a fresh project folder."""
    from evertrain.faces.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "project"
    with io.StringIO() as sink:
        summary = run_demo(out, fast=True, console=Console(file=sink, width=120))
    return out, summary
