"""Imports run one way: the layers contract of pyproject.toml holds and no modules import in a circle.

Both checks run on this checkout's ``src`` and must pass, and on a copy of it with one bad
import added, where they must fail and name it, so a change that breaks a layer fails CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def check(src: Path) -> tuple[int, str]:
    """Run ``lint-imports`` (with this checkout's pyproject.toml) and the circle check on the
    ``evertrain`` package under ``src``; the exit code (0 when both pass) and what they said."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    lint = subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    circles = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_circles.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    said = lint.stdout + lint.stderr + circles.stdout + circles.stderr
    return max(lint.returncode, circles.returncode), said


def test_the_package_keeps_its_layers_and_has_no_circles() -> None:
    code, output = check(ROOT / "src")
    assert code == 0, output
    assert "1 kept, 0 broken" in output
    assert "0 circle(s)" in output


BAD = {
    "an upward import": (
        {"store/_upward.py": "from evertrain.controller import loop\n"},
        "evertrain.store is not allowed to import evertrain.controller",
    ),
    "a lazy upward import": (
        {"monitor/_upward.py": "def f():\n    from evertrain.serve import app\n"},
        "evertrain.monitor is not allowed to import evertrain.serve",
    ),
    "a part outside the layers": (
        {"newpart.py": "from evertrain import settings\n"},
        "- evertrain.newpart",
    ),
    "a circle inside a part": (
        {
            "data/_circle_a.py": "def f():\n    from evertrain.data import _circle_b\n",
            "data/_circle_b.py": "from evertrain.data import _circle_a\n",
        },
        "in a circle: evertrain.data._circle_a, evertrain.data._circle_b",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_import_fails_the_check(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "src" / "evertrain", src / "evertrain", ignore=skip)
    files, expected = BAD[case]
    for path, text in files.items():
        (src / "evertrain" / path).write_text(text)
    code, output = check(src)
    assert code != 0, output
    assert expected in output, output
