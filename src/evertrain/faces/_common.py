"""What every command shares: the project option, JSON output, the store, error handling."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from evertrain.exceptions import EvertrainError, UsageError
from evertrain.store import Store

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder (holds evertrain.yaml and .evertrain/).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


_opened: list[Store] = []


def open_store(project: Path) -> Store:
    """The project's store, opened; ``close_stores`` closes it when the command ends.

    The project file's ``storage`` section (storage options, logs URL) applies to it when
    the file is there and valid; the commands that need the file report a bad one.
    """
    apply_storage(project)
    store = Store.for_project(project)
    logs = storage_logs_url(project)
    if logs is not None:
        store.logs_url = logs
    _opened.append(store)
    return store.open()


def apply_storage(project: Path) -> None:
    """Use the storage options of the project file in ``project`` (if it has a valid one)."""
    from evertrain.spec import SPEC_FILE, load_spec
    from evertrain.store.storage import configure

    if not (Path(project) / SPEC_FILE).is_file():
        return
    try:
        spec = load_spec(project)
    except EvertrainError:
        return
    configure(spec.storage.options)


def storage_logs_url(project: Path) -> str | None:
    """The logs URL of the project file's ``storage.logs_url``, unless ``EVERTRAIN_LOGS_URL`` is set."""
    from evertrain import settings
    from evertrain.spec import SPEC_FILE, load_spec

    if settings.LOGS_URL.raw() or not (Path(project) / SPEC_FILE).is_file():
        return None
    try:
        url = load_spec(project).storage.logs_url
    except EvertrainError:
        return None
    if url is None or "://" in url or Path(url).is_absolute():
        return url
    return str((Path(project) / url).resolve())


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
