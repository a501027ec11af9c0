"""The registry commands as a person or a script uses them: output shapes and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from evertrain.faces.cli import main
from evertrain.store import Store
from evertrain.store.metadata import audit_log

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A project folder; on PostgreSQL its metadata lives in a fresh schema."""
    if backend == "postgresql":
        monkeypatch.setenv("EVERTRAIN_DB_URL", request.getfixturevalue("db_url"))
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``evertrain ARGS...`` in this process; returns exit code, stdout and stderr."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def json_of(cli: Cli, *args: str) -> Any:
    code, out, err = cli(*args)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def model_file(project: Path) -> Path:
    path = project / "model.json"
    path.write_text(json.dumps({"threshold": 0.5}))
    return path


def test_register_versions_promote_rollback(cli: Cli, model_file: Path) -> None:
    first = json_of(cli, "register", "churn", str(model_file), "--json")
    assert (first["model"], first["version"], first["framework"]) == ("churn", 1, "json")
    model_file.write_text(json.dumps({"threshold": 0.7}))
    code, out, _ = cli(
        "register", "churn", str(model_file), "--metrics", '{"auc": 0.93}', "--reason", "better"
    )
    assert code == 0 and "version 2" in out

    listed = json_of(cli, "versions", "churn", "--json")
    assert listed["model"] == "churn"
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    for v in listed["versions"]:
        assert {"version", "created_at", "metrics", "snapshot", "parent", "trigger"} <= set(v)
    assert listed["versions"][1]["metrics"] == {"auc": 0.93}
    assert listed["versions"][1]["trigger"] == "manual"

    assert cli("promote", "churn", "1")[0] == 0
    moved = json_of(cli, "promote", "churn", "2", "--expect", "1", "--reason", "auc up", "--json")
    assert (moved["from_version"], moved["to_version"], moved["outcome"]) == (1, 2, "applied")

    back = json_of(cli, "rollback", "churn", "--reason", "bad canary", "--json")
    assert (back["from_version"], back["to_version"], back["action"]) == (2, 1, "rollback")
    code, out, _ = cli("versions", "churn")
    assert code == 0 and "champion" in out


def test_a_promotion_that_lost_its_race_exits_1(cli: Cli, model_file: Path) -> None:
    for _ in range(3):
        cli("register", "churn", str(model_file))
    cli("promote", "churn", "1")
    cli("promote", "churn", "2", "--expect", "1")
    code, _out, err = cli("promote", "churn", "3", "--expect", "1")
    assert code == 1
    assert err.count("\n") == 1 and "holds version 2, not the expected 1" in err
    assert json_of(cli, "status", "--json")["models"][0]["aliases"]["champion"] == 2


def test_status_lineage_and_audit_shapes(cli: Cli, model_file: Path) -> None:
    assert json_of(cli, "status", "--json") == {"models": []}
    cli("register", "churn", str(model_file))
    cli("promote", "churn", "1")
    status = json_of(cli, "status", "--json")
    [entry] = status["models"]
    assert entry["name"] == "churn"
    assert entry["aliases"] == {"champion": 1, "challenger": None, "canary": None, "shadow": None}
    assert entry["last_decision"] is None

    lineage = json_of(cli, "lineage", "churn", "1", "--json")
    assert {"model", "version", "snapshots", "parent", "trigger", "gates"} <= set(lineage)
    assert (lineage["model"], lineage["version"], lineage["snapshots"], lineage["gates"]) == (
        "churn",
        1,
        [],
        [],
    )

    code, out, _ = cli("audit", "verify")
    assert code == 0 and "2 entries" in out
    assert json_of(cli, "audit", "verify", "--json")["ok"] is True
    assert [e["action"] for e in json_of(cli, "audit", "show", "--json")] == ["register", "promote"]
    code, out, _ = cli("status")
    assert code == 0 and "churn" in out


def test_audit_verify_exits_1_naming_the_tampered_entry(cli: Cli, model_file: Path) -> None:
    for _ in range(3):
        cli("register", "churn", str(model_file))
    with Store.for_project(Path(".")) as store, store.db.engine.begin() as conn:
        conn.execute(sa.update(audit_log).where(audit_log.c.seq == 2).values(actor="mallory"))
    code, _, err = cli("audit", "verify")
    assert code == 1
    assert "entry 2" in err and err.count("\n") == 1
    result = cli("audit", "verify", "--json")
    assert result[0] == 1 and json.loads(result[1])["first_bad_seq"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ["nosuch"],
        ["versions"],
        ["promote", "churn"],
        ["status", "--bogus"],
        ["versions", "ghost"],
        ["promote", "churn", "9"],
        ["register", "churn", "missing.json"],
        ["register", "churn", "model.json", "--metrics", "{not json"],
        ["register", "churn", "model.json", "--metrics", "[1, 2]"],
        ["register", "churn", "model.json", "--metrics", '{"auc": NaN}'],
        ["register", "churn", "model.json", "--framework", "pickle"],
        ["register", "churn", "model.json", "--framework", "lightgbm"],
        ["rollback", "churn"],
    ],
)
def test_bad_usage_or_input_exits_2_with_a_reason(cli: Cli, model_file: Path, args: list[str]) -> None:
    cli("register", "churn", str(model_file))
    code, _, err = cli(*args)
    assert code == 2
    assert err.strip() and "Traceback" not in err


def test_the_console_script_maps_errors_to_exit_codes(tmp_path: Path) -> None:
    evertrain = Path(sys.executable).with_name("evertrain")
    done = subprocess.run(
        [str(evertrain), "versions", "../etc"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: model name '../etc' is not allowed")
    assert list(tmp_path.iterdir()) == []
