"""Ctrl-C and progress for the long commands (``train``, ``backtest``, ``run``, ``demo``).

Ctrl-C raises ``KeyboardInterrupt`` where the command is; the parts below clean up on
the way out (the local executor kills its training worker, runs stay recorded as running
so the next start resumes them), and :func:`on_interrupt` turns it into one line and exit
code 130, as shells expect of a command stopped by SIGINT.

Progress bars are for people: :func:`wants_progress` is true on a terminal only, never
when the output is piped or is JSON.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

#: The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def on_interrupt(what: str) -> Iterator[None]:
    """Exit 130 with one line on stderr saying what stopped and how it resumes."""
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write(f"\ninterrupted: {what}\n")
        sys.stderr.flush()
        raise typer.Exit(EXIT_INTERRUPTED) from None


def wants_progress(json_output: bool = False) -> bool:
    """Whether to draw progress: standard output is a terminal and no JSON goes to it."""
    from evertrain.faces._common import console

    return console.is_terminal and not json_output


def elapsed(what: str, json_output: bool = False) -> contextlib.AbstractContextManager[object]:
    """A spinner with ``what`` and the time elapsed while the block runs (a terminal only)."""
    if not wants_progress(json_output):
        return contextlib.nullcontext()
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from evertrain.faces._common import console

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    progress.add_task(what, total=None)
    return progress
