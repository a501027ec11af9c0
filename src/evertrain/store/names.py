"""Validation of the names that become keys and paths: model names, versions and aliases."""

from __future__ import annotations

import re

from evertrain.exceptions import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: The aliases the loop moves, defined here once for every part. The serving log's
#: ``arm`` column uses the same words: the arm is the alias that served the row.
CHAMPION = "champion"  # serves the traffic
CHALLENGER = "challenger"
CANARY = "canary"  # serves a share of the traffic during a rollout
SHADOW = "shadow"  # sees the traffic during a rollout; its answers are logged, not returned
KNOWN_ALIASES = (CHAMPION, CHALLENGER, CANARY, SHADOW)


def check_model_name(name: str) -> str:
    """A model name: letters, digits, ``_ . -``, at most 128 long, no ``..``.

    >>> check_model_name("churn-v2")
    'churn-v2'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"model name {name!r} is not allowed: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit, and no '..'"
        )
    return name


def parse_version(value: str | int) -> int:
    """A version number: a positive integer, given as an int or a string of digits.

    >>> parse_version("3")
    3
    """
    if isinstance(value, bool):
        raise InvalidNameError(f"version {value!r} is not a positive integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        number = int(value)
    else:
        raise InvalidNameError(f"version {value!r} is not a positive integer")
    if number < 1:
        raise InvalidNameError(f"version {value!r} is not a positive integer")
    return number


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidNameError(
            f"alias {alias!r} is not allowed: use 1-32 lowercase letters, digits, '_' or '-' "
            f"(the usual ones are {', '.join(KNOWN_ALIASES)})"
        )
    return alias
