"""The ``evertrain`` command line (typer + rich).

Exit codes, as in DESIGN.md: 0 ok, 1 the check failed (drift found, audit broken, gate
failed, a lost compare-and-swap), 2 bad usage or bad input, with a one-line reason on
stderr. Commands live in ``cli_*`` modules, one per part, and register themselves on
``app`` (:mod:`evertrain.faces.cli_app`) when imported; this module imports them all and
runs the app.
"""

from __future__ import annotations

import sys

import typer

from evertrain.exceptions import EvertrainError
from evertrain.faces import (
    cli_backtest,
    cli_controller,
    cli_monitor,
    cli_serve,
    cli_store,
    cli_train,
)
from evertrain.faces._common import close_stores
from evertrain.faces.cli_app import app

__all__ = [
    "app",
    "cli_backtest",
    "cli_controller",
    "cli_monitor",
    "cli_serve",
    "cli_store",
    "cli_train",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; maps evertrain errors to exit codes."""
    try:
        result = app(args=argv, standalone_mode=False)
    except EvertrainError as exc:
        sys.stderr.write(f"error: {exc.message.splitlines()[0] if exc.message else type(exc).__name__}\n")
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 2
    except Exception as exc:
        if isinstance(exc, _usage_errors()):
            exc.show()  # type: ignore[attr-defined]
            return 2
        raise
    finally:
        close_stores()
    return result if isinstance(result, int) else 0


def _usage_errors() -> tuple[type[Exception], ...]:
    """Bad command lines, as the installed typer raises them.

    Recent typer releases carry their own copy of click, whose errors derive from
    ``typer.TyperException`` and not from ``click.ClickException``; older ones raise
    click's. Both mean a bad command line: exit 2.
    """
    kinds: list[type[Exception]] = []
    vendored = getattr(typer, "TyperException", None)
    if isinstance(vendored, type):
        kinds.append(vendored)
    try:
        import click
    except ImportError:  # pragma: no cover - only typer's own copy is installed
        pass
    else:
        kinds.append(click.ClickException)
    return tuple(kinds)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
