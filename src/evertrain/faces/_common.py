"""What every command shares: the project option, JSON output, the store, error handling."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from evertrain.exceptions import UsageError
from evertrain.store import Store

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder (holds evertrain.yaml and .evertrain/).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


_opened: list[Store] = []


def open_store(project: Path) -> Store:
    """The project's store, opened; ``close_stores`` closes it when the command ends."""
    store = Store.for_project(project)
    _opened.append(store)
    return store.open()


def close_stores() -> None:
    """Close every store this command opened (their pooled database connections)."""
    while _opened:
        _opened.pop().close()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def write_json(target: Path, payload: Any) -> None:
    """``--json FILE`` output: the file, or standard output when FILE is ``-``."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
