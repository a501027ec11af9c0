"""The ``evertrain`` command line (typer + rich).

Exit codes, as in DESIGN.md: 0 ok, 1 the check failed (drift found, audit broken, gate
failed, a lost compare-and-swap), 2 bad usage or bad input, with a one-line reason on
stderr. No traceback reaches a user: an error nobody foresaw is one line too (exit 2),
and ``EVERTRAIN_DEBUG=1`` shows its traceback.

Commands live in ``cli_*`` modules, one per part, and register themselves on ``app``
(:mod:`evertrain.faces.cli_app`) when imported; the app imports only the module of the
command being run, so quick commands stay quick.
"""

from __future__ import annotations

import gc
import os
import sys

import typer

from evertrain.exceptions import EvertrainError
from evertrain.faces._entry import close_stores, normalize_json_flag
from evertrain.faces.cli_app import app

__all__ = ["app", "main"]

DEBUG_VARIABLE = "EVERTRAIN_DEBUG"

#: Commands that read or move a few rows of the registry and end (see :func:`_quick`).
QUICK_COMMANDS = frozenset({"status", "versions", "promote", "rollback", "lineage"})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; maps every error to an exit code and one line."""
    args = normalize_json_flag(list(sys.argv[1:] if argv is None else argv))
    quick = argv is None and _quick(args)
    if quick:
        gc.disable()
    try:
        result = app(args=args, standalone_mode=False, prog_name="evertrain")
    except EvertrainError as exc:
        return _fail(exc.message or type(exc).__name__, exc.exit_code)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        return 130
    except RecursionError:
        return _fail("input nested too deeply to read", 2)
    except Exception as exc:
        if isinstance(exc, _usage_errors()):
            exc.show()  # type: ignore[attr-defined]
            return 2
        if _debug():
            raise
        return _fail(_unexpected(exc), 2)
    finally:
        close_stores()
        if argv is None:
            _ending()
        if quick:
            gc.enable()
    return result if isinstance(result, int) else 0


def _quick(args: list[str]) -> bool:
    """Whether the command line asks for a quick command, or for the help or the version.

    Those run without the cyclic garbage collector: nearly every object they make is a
    class, function or constant of a module they import, which lives until the process
    ends, so each collection (over a hundred while typer and SQLAlchemy load) walks
    objects it can never free, about a tenth of the command's CPU time. Their own work is a few
    rows, with next to no garbage in cycles. Commands that run long or handle data keep
    the collector.
    """
    return not args or args[0] in QUICK_COMMANDS or args[0] in ("--help", "--version")


def _ending() -> None:
    """Spare the ending process the garbage collector's passes over everything it imported.

    When the interpreter exits it collects garbage while it tears the modules down,
    and each pass walks every object still tracked: for a quick command, whose imports
    (SQLAlchemy's above all) make most of its objects, that costs about as much CPU as
    the command's own work. Frozen objects are left out of every later pass (garbage
    among them is not finalized, which is why the command's stores are closed first).
    Only the console script calls this (``argv`` not given); an in-process caller (a
    test, a program embedding the command line) keeps its collector as it was.
    """
    gc.freeze()


def _fail(message: str, code: int) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    sys.stderr.write(f"error: {first}\n")
    return code


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _unexpected(exc: BaseException) -> str:
    """One line for an error no check foresaw: what it was, and how to see more."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return f"{text} (set {DEBUG_VARIABLE}=1 for the traceback)"


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
    click = sys.modules.get("click")  # only when something imported it: never import it for this
    if click is not None:
        kinds.append(click.ClickException)
    return tuple(kinds)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
