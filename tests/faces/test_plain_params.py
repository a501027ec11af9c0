"""Strings, paths and flags read without typer's pydantic adapters read exactly as typer reads them.

The same small command runs twice on the same command lines: in this process with
typer's own readers, and in a fresh interpreter with :func:`read_plain_values`, which
must then never import pydantic. Values, their types and the errors must be the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_APP = """
import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


@app.command()
def show(
    name: str,
    where: Path = Path("."),
    out: Annotated[Path | None, typer.Option()] = None,
    must: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    note: Annotated[str | None, typer.Option()] = None,
    loud: bool = False,
) -> None:
    values = {"name": name, "where": where, "out": out, "must": must, "note": note, "loud": loud}
    print(json.dumps({k: [type(v).__name__, str(v)] for k, v in values.items()}))


def run(args, plain):
    import contextlib, io

    command = typer.main.get_command(app)
    if plain:
        from evertrain.faces._plain_params import read_plain_values

        read_plain_values(command, typer.Context(command))
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            command.main(list(args), standalone_mode=False, prog_name="show")
    except Exception as exc:
        return {"error": type(exc).__name__, "message": exc.format_message()}
    return json.loads(shown.getvalue())
"""

CASES = [
    ["churn"],
    ["churn", "--where", "sub/dir", "--out", "-", "--note", "a b"],
    ["churn", "--must", "model.txt", "--loud"],
    ["churn", "--must", "missing.txt"],  # typer's existence check
    ["churn", "--must", "folder"],  # typer's no-directory check
    ["churn", "--loud", "--where", ""],
    [],  # a missing argument
]


def _own(cwd: Path) -> list[dict[str, object]]:
    namespace: dict[str, object] = {}
    exec(_APP, namespace)
    return [namespace["run"](args, False) for args in CASES]  # type: ignore[operator]


def test_plain_values_read_as_typer_reads_them_without_pydantic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    expected = _own(tmp_path)
    assert expected[3]["error"] == "BadParameter" and "does not exist" in str(expected[3]["message"])
    assert expected[4]["error"] == "BadParameter" and "is a directory" in str(expected[4]["message"])

    probe = (
        _APP
        + "\nimport sys\nprint(json.dumps({'runs': [run(a, True) for a in json.loads(sys.argv[1])],"
        + " 'pydantic': 'pydantic' in sys.modules}))"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(CASES)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["runs"] == expected
    assert not got["pydantic"], "reading plain values imported pydantic"
