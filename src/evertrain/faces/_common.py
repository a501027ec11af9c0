"""What every command shares: the project option, JSON output, the store, error handling.

One ``--json`` convention holds for every command: ``--json`` alone prints the result as
JSON on standard output instead of the table (and nothing else goes there), and
``--json FILE`` writes the same JSON to FILE (``-`` is standard output). The bare form
is turned into ``--json -`` by :func:`evertrain.faces._entry.normalize_json_flag` before
parsing, so every command declares one option, :data:`JsonOpt`.

This module stays light (typer, rich, the error tree): a command imports the heavy
parts it needs inside its own body, so ``evertrain status`` never pays for pandas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from evertrain.exceptions import UsageError
from evertrain.faces._entry import track_store

if TYPE_CHECKING:
    from evertrain.store import Store

#: The project file's name (the same as :data:`evertrain.spec.SPEC_FILE`; spelled here so
#: that checking for it does not import pydantic).
SPEC_FILE = "evertrain.yaml"

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder (holds evertrain.yaml and .evertrain/).")
]
JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json",
        metavar="[FILE]",
        help="Print JSON instead of the table; with FILE, write it there ('-': standard output).",
    ),
]


def require_project(project: Path) -> Path:
    """``project`` if it holds evertrain.yaml; else a one-line usage error, and nothing is created."""
    if not (project / SPEC_FILE).is_file():
        where = "here" if project.resolve() == Path.cwd().resolve() else f"in {project}"
        raise UsageError(f"no {SPEC_FILE} {where} (use --project or evertrain init)")
    return project


def open_store(project: Path) -> Store:
    """The project's store, opened; ``close_stores`` closes it when the command ends.

    Refuses a folder that is not a project, so that a command run in the wrong folder
    creates nothing there. The project file's ``storage`` section (storage options, logs
    URL) applies to it when the file is valid; the commands that need the file report a
    bad one.
    """
    from evertrain.store import Store

    require_project(project)
    apply_storage(project)
    store = Store.for_project(project)
    logs = storage_logs_url(project)
    if logs is not None:
        store.logs_url = logs
    track_store(store)
    return store.open()


def _storage_section(project: Path) -> Any:
    """The ``storage`` section of the project file in ``project``, or None.

    Only that section is read and validated: checking the whole file (trainer parameters
    against their framework) would import the frameworks, and the quick commands that
    open a store must not pay for them. A bad section, or a file that cannot be read, is
    left to the commands that need the file, which report it.
    """
    path = Path(project) / SPEC_FILE
    try:
        text = path.read_text()
    except (OSError, ValueError):
        return None
    if "storage" not in text and "\\" not in text:
        # Nothing can name the section (an escape in a quoted key aside): no YAML parser needed.
        return None
    import yaml

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        section = data.get("storage") if isinstance(data, dict) else None
        if not section:
            # The defaults configure nothing: no need to import the spec's models for them.
            return None
        from evertrain.spec import StorageSpec

        return StorageSpec.model_validate(section)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def apply_storage(project: Path) -> None:
    """Use the storage options of the project file in ``project`` (if it has a valid one)."""
    from evertrain.store.storage import configure

    storage = _storage_section(project)
    if storage is not None:
        configure(storage.options)


def storage_logs_url(project: Path) -> str | None:
    """The logs URL of the project file's ``storage.logs_url``, unless ``EVERTRAIN_LOGS_URL`` is set."""
    from evertrain import settings

    if settings.LOGS_URL.raw():
        return None
    storage = _storage_section(project)
    url = None if storage is None else storage.logs_url
    if url is None or "://" in url or Path(url).is_absolute():
        return url
    return str((Path(project) / url).resolve())


def to_stdout(target: Path | None) -> bool:
    """Whether ``--json`` asks for JSON on standard output (so no table may go there)."""
    return target is not None and str(target) == "-"


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def write_json(target: Path, payload: Any) -> None:
    """``--json [FILE]`` output: the file, or standard output when FILE is ``-``."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
