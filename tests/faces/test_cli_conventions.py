"""What every command shares: --version, --help, --json [FILE], no project, no traceback, no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evertrain.__version__ import __version__
from evertrain.faces.cli import main
from evertrain.faces.cli_app import COMMANDS, app

#: Modules a quick command must never import (each costs a large share of a second or more).
HEAVY = ("pandas", "sklearn", "pyarrow", "fastapi", "lightgbm", "scipy")

PROBE = """
import contextlib, io, json, sys
from evertrain.faces.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = tmp_path / "shop"
    assert _run(capsys, "init", str(folder))[0] == 0
    return folder


def test_version_and_help_list_every_command_in_order_with_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"evertrain {__version__}"
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    positions = [out.index(f"│ {c.name} ") for c in COMMANDS]
    assert positions == sorted(positions)
    assert "Examples" in out and "evertrain init" in out


def test_the_quick_commands_are_commands() -> None:
    from evertrain.faces.cli import QUICK_COMMANDS

    assert not QUICK_COMMANDS - {c.name for c in COMMANDS}


def test_each_command_summary_is_its_docstring() -> None:
    import importlib

    import typer

    for entry in COMMANDS:
        importlib.import_module(entry.module)
    group = typer.main.get_group(app)
    for entry in COMMANDS:
        command = group.commands[entry.name]
        assert (command.help or "").strip().splitlines()[0] == entry.summary, entry.name


def test_unknown_command_suggests_the_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "statsu")
    assert code == 2 and "Did you mean 'status'" in err


def test_outside_a_project_commands_exit_2_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for argv in (
        ["status"],
        ["versions", "churn"],
        ["promote", "churn", "1"],
        ["runs", "churn"],
        ["train", "churn"],
    ):
        code, _, err = _run(capsys, *argv)
        assert code == 2, argv
        assert err == "error: no evertrain.yaml here (use --project or evertrain init)\n", argv
    assert list(empty.iterdir()) == []


def test_status_after_init_shows_the_configured_model(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "status", "--project", str(project))
    assert code == 0 and "churn" in out and "churn: no version yet" in out


def test_one_json_convention(project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _run(capsys, "status", "--project", str(project), "--json")
    assert code == 0 and json.loads(out)["models"][0]["name"] == "churn"
    target = tmp_path / "status.json"
    code, out, _ = _run(capsys, "status", "--json", str(target), "--project", str(project))
    assert code == 0 and out == "" and json.loads(target.read_text())["models"][0]["n_versions"] == 0
    code, out, _ = _run(capsys, "runs", "churn", "--json", "--project", str(project))
    assert code == 0 and json.loads(out) == {"model": "churn", "runs": [], "varying_params": []}


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["serve", "--port", "99999"], "--port"),
        (["serve", "--host", "203.0.113.7", "--port", "8080"], "cannot serve on 203.0.113.7:8080"),
        (["init", "{file}/inside"], "cannot write the project"),
    ],
)
def test_no_traceback_reaches_a_user(
    argv: list[str], reason: str, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    args = [a.replace("{file}", str(afile)) for a in argv]
    if args[0] == "serve":
        args += ["--project", str(project)]
    code, _, err = _run(capsys, *args)
    assert code == 2 and reason in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["status"], ["versions", "churn"], ["promote", "churn", "1"], ["rollback", "churn"]],
)
def test_quick_commands_import_no_heavy_module(argv: list[str], project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE % (HEAVY,),
            *argv,
            *([] if argv == ["--help"] else ["--project", str(project)]),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == [], answer
