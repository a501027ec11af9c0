"""The error tree: every error maps to a code, an exit code and an HTTP status, as drawn."""

from __future__ import annotations

import inspect
import re

import pytest

from evertrain import exceptions
from evertrain.exceptions import EvertrainError, InputError, ServeError

ERRORS = [
    value
    for value in vars(exceptions).values()
    if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == exceptions.__name__
]
# One line of the drawing: its branches, the class, its exit code and its HTTP status.
TREE_LINE = re.compile(
    r"^(?P<branches>[ │├└─]*)(?P<name>[A-Za-z]+)\s+exit (?P<exit>\d), HTTP (?P<status>\d{3})\b"
)


def drawn_tree() -> dict[str, tuple[str | None, int, int]]:
    """Class name -> (parent name, exit code, HTTP status), read from the module docstring."""
    drawn: dict[str, tuple[str | None, int, int]] = {}
    parents: list[str] = []
    for line in inspect.cleandoc(exceptions.__doc__ or "").splitlines():
        found = TREE_LINE.match(line)
        if not found:
            continue
        depth = len(found["branches"]) // 4 - 1  # the drawing is indented by four spaces
        parents[depth:] = [found["name"]]
        parent = parents[depth - 1] if depth else None
        drawn[found["name"]] = (parent, int(found["exit"]), int(found["status"]))
    return drawn


def test_every_error_is_under_the_root_and_exported() -> None:
    assert {e.__name__ for e in ERRORS} == set(exceptions.__all__)
    for error in ERRORS:
        assert issubclass(error, EvertrainError), error


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_error_has_a_code_an_exit_code_and_an_http_status(error: type[EvertrainError]) -> None:
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", error.code), error.code
    assert error.exit_code in (1, 2)  # 1: a check said no; 2: bad usage or input (DESIGN.md)
    assert 100 <= error.http_status <= 599


def test_codes_are_unique() -> None:
    codes = [error.code for error in ERRORS]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    drawn = drawn_tree()
    assert set(drawn) == {e.__name__ for e in ERRORS}
    for error in ERRORS:
        parent, exit_code, status = drawn[error.__name__]
        base = error.__bases__[0]
        assert (parent, exit_code, status) == (
            None if base is Exception else base.__name__,
            error.exit_code,
            error.http_status,
        ), error.__name__


def test_serving_errors_keep_the_status_and_field_of_the_answer() -> None:
    err = ServeError(404, "no model named 'x'")
    assert (err.http_status, err.exit_code, str(err), err.field) == (404, 2, "no model named 'x'", None)
    too_big = InputError("body", "over 1 MB", http_status=413)
    assert (too_big.http_status, too_big.field, str(too_big)) == (413, "body", "body: over 1 MB")
    assert InputError("instances[0].age", "expected a number").http_status == 422
    assert str(InputError("", "empty body")) == "empty body"
