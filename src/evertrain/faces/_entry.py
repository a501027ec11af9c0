"""What the entry point does around every command, kept apart from what the commands share.

:mod:`evertrain.faces.cli` imports this module and not :mod:`evertrain.faces._common`
(rich's consoles, the project option, the store): ``evertrain --version`` and
``evertrain --help`` need neither, and start in about half the time without them.
"""

from __future__ import annotations

from typing import Any

JSON_OPTION = "--json"

#: Stores the running command opened (see :func:`evertrain.faces._common.open_store`).
_opened: list[Any] = []


def normalize_json_flag(argv: list[str]) -> list[str]:
    """``--json`` given without a FILE becomes ``--json -`` (standard output).

    A bare ``--json`` is one that ends the command line or is followed by another option.
    """
    out: list[str] = []
    for i, token in enumerate(argv):
        out.append(token)
        if token == JSON_OPTION:
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or (following.startswith("-") and following != "-"):
                out.append("-")
    return out


def track_store(store: Any) -> None:
    """Close ``store`` when the command ends (:func:`close_stores`)."""
    _opened.append(store)


def close_stores() -> None:
    """Close every store this command opened (their pooled database connections)."""
    while _opened:
        _opened.pop().close()


__all__ = ["JSON_OPTION", "close_stores", "normalize_json_flag", "track_store"]
