"""Ctrl-C and progress for the long commands (``train``, ``backtest``, ``run``, ``demo``).

Ctrl-C raises ``KeyboardInterrupt`` where the command is; the parts below clean up on
the way out (the local executor kills its training worker, runs stay recorded as running
so the next start resumes them), and :func:`on_interrupt` turns it into one line and exit
code 130, as shells expect of a command stopped by SIGINT.

Progress bars are for people: :func:`wants_progress` is true on a terminal only, never
when the output is piped or is JSON. :func:`progress_line` shows what a training reports
(its stage, then the trainer's iterations) with the time elapsed.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from evertrain.train.progress import Listener
    from evertrain.train.progress import Progress as Report

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


@contextlib.contextmanager
def progress_line(what: str, json_output: bool = False) -> Iterator[Listener | None]:
    """One live line while the block runs, on a terminal only: ``what``, the stage or the
    iterations reported (a bar once their total is known) and the time elapsed.

    Yields the listener to give the work (:mod:`evertrain.train.progress` reports), or
    None off a terminal and with JSON output, where nothing extra may be written.
    """
    if not wants_progress(json_output):
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from evertrain.faces._common import console

    line = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = line.add_task(what, total=None)

    def show(report: Report) -> None:
        line.update(
            task,
            description=f"{what}: {report.text()}",
            total=report.total if report.done is not None else None,
            completed=report.done or 0,
        )
        line.refresh()  # drawn now: the next report may come before the next timed refresh

    with line:
        yield show
