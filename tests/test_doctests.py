"""The examples in the package's docstrings run and still show what they say.

Every module of ``src/evertrain`` with a ``>>>`` line is imported and its docstring
examples are run, so a stale example fails the suite. Only those modules are imported
(not the whole package: Alembic's ``env.py`` runs only under Alembic, and optional
dependencies load only where an example needs them).
"""

from __future__ import annotations

import doctest
import importlib
import io
import re
from pathlib import Path

import pytest

import evertrain

PACKAGE = Path(evertrain.__file__).parent
EXAMPLE = re.compile(r"^\s*>>> ", re.MULTILINE)


def modules_with_examples() -> list[str]:
    """Dotted names of the package's modules whose source holds a ``>>>`` line."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if EXAMPLE.search(path.read_text(encoding="utf-8")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


MODULES = modules_with_examples()


def test_examples_are_found() -> None:
    assert "evertrain.monitor.estimate" in MODULES, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>>' lines but no docstring example was found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
