"""The registry commands as a person or a script uses them: output shapes and exit codes."""

from __future__ import annotations

import json
import shutil
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


NUMERIC = ["tenure_months", "monthly_spend", "support_calls", "visits"]


@pytest.fixture(scope="module")
def churn_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn example project as ``evertrain init`` writes it (made once, copied per test)."""
    folder = tmp_path_factory.mktemp("example") / "churn"
    assert main(["init", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def model_bytes(churn_example: Path) -> bytes:
    """A scikit-learn model of the churn example's numeric columns, saved with skops."""
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(churn_example / "data" / "churn.csv").head(2000)
    model = LogisticRegression(max_iter=200).fit(frame[NUMERIC], frame["churned"])
    return bytes(sio.dumps(model))


@pytest.fixture
def project(
    tmp_path: Path,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    churn_example: Path,
) -> Path:
    """A fresh copy of the churn project; on PostgreSQL its metadata lives in a fresh schema."""
    if backend == "postgresql":
        monkeypatch.setenv("EVERTRAIN_DB_URL", request.getfixturevalue("db_url"))
    folder = tmp_path / "project"
    shutil.copytree(churn_example, folder)
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
def model_file(project: Path, model_bytes: bytes) -> Path:
    path = project / "model.skops"
    path.write_bytes(model_bytes)
    return path


def test_register_versions_promote_rollback(cli: Cli, model_file: Path) -> None:
    first = json_of(cli, "register", "churn", str(model_file), "--json")
    assert (first["model"], first["version"], first["framework"]) == ("churn", 1, "sklearn")
    assert first["checked_rows"] > 0
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
    [configured] = json_of(cli, "status", "--json")["models"]
    assert (configured["name"], configured["n_versions"], configured["aliases"]["champion"]) == (
        "churn",
        0,
        None,
    )
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
        ["register", "churn", "missing.skops"],
        ["register", "churn", "model.skops", "--metrics", "{not json"],
        ["register", "churn", "model.skops", "--metrics", "[1, 2]"],
        ["register", "churn", "model.skops", "--metrics", '{"auc": NaN}'],
        ["register", "churn", "model.skops", "--metrics", "[" * 100_000 + "]" * 100_000],
        ["register", "churn", "model.skops", "--metrics", '{"a": ' * 5000 + "1" + "}" * 5000],
        ["register", "churn", "model.skops", "--framework", "pickle"],
        ["register", "churn", "model.skops", "--framework", "lightgbm"],
        ["register", "other", "model.skops"],
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


def _sklearn_bytes(columns: list[str], churn_example: Path, *, c: float = 1.0) -> bytes:
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(churn_example / "data" / "churn.csv").head(500)
    model = LogisticRegression(C=c, max_iter=200).fit(frame[NUMERIC].to_numpy(), frame["churned"])
    if columns != NUMERIC:
        model = LogisticRegression(C=c, max_iter=200).fit(
            frame[NUMERIC].set_axis(columns, axis=1), frame["churned"]
        )
    return bytes(sio.dumps(model))


def test_register_refuses_what_cannot_be_served(cli: Cli, project: Path, churn_example: Path) -> None:
    import skops.io as sio

    (project / "rules.json").write_text(json.dumps({"threshold": 0.5}))
    (project / "dict.skops").write_bytes(bytes(sio.dumps({"coef": [1.0, 2.0]})))
    renamed = ["tenure", "spend", "calls", "visits"]
    (project / "renamed.skops").write_bytes(_sklearn_bytes(renamed, churn_example))
    (project / "unnamed.skops").write_bytes(_sklearn_bytes(NUMERIC, churn_example))  # fitted on a bare array
    expected = {
        "rules.json": "not a model with predict()",
        "dict.skops": "not a model with predict()",
        "renamed.skops": "that the project's data lacks",
        "unnamed.skops": "takes 4 features, but the project has 6",
    }
    for name, reason in expected.items():
        code, out, err = cli("register", "churn", name)
        assert code == 2, (name, out, err)
        assert err.count("\n") == 1 and reason in err, (name, err)
    # Nothing reached the registry: the configured model still has no version.
    [entry] = json_of(cli, "status", "--json")["models"]
    assert entry["n_versions"] == 0


def test_promoting_the_champion_again_changes_nothing(cli: Cli, model_file: Path) -> None:
    for _ in range(2):
        cli("register", "churn", str(model_file))
    cli("promote", "churn", "1")
    cli("promote", "churn", "2")
    again = json_of(cli, "promote", "churn", "2", "--json")
    assert (again["outcome"], again["from_version"], again["to_version"]) == ("unchanged", 2, 2)
    code, out, _ = cli("promote", "churn", "2")
    assert code == 0 and "already the champion" in out
    back = json_of(cli, "rollback", "churn", "--json")
    assert (back["from_version"], back["to_version"]) == (2, 1)


def test_promote_and_rollback_refuse_an_artifact_that_fails_its_hash_or_cannot_load(
    cli: Cli, project: Path, model_file: Path, churn_example: Path
) -> None:
    import skops.io as sio

    cli("register", "churn", str(model_file))
    other = project / "other.skops"
    other.write_bytes(_sklearn_bytes(NUMERIC, churn_example, c=0.25))
    cli("promote", "churn", "1")
    with Store.for_project(project) as store:
        # A version whose artifact is not a model (only the Python API can make one).
        junk = store.artifacts.put(bytes(sio.dumps({"a": 1})))
        broken = store.registry.register("churn", junk, framework="sklearn", actor="t").version
        v1 = store.registry.get_version("churn", 1)
        blob = Path(store.artifacts.path(v1.artifact_sha256))
    code, _, err = cli("promote", "churn", str(broken))
    assert code == 2 and "cannot be loaded" in err and err.count("\n") == 1
    # Version 1's blob is damaged after a newer champion replaced it: a rollback to it is refused.
    with Store.for_project(project) as store:
        digest = store.artifacts.put(other.read_bytes())
        v3 = store.registry.register("churn", digest, framework="sklearn", actor="t").version
    assert cli("promote", "churn", str(v3))[0] == 0
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    code, _, err = cli("rollback", "churn")
    assert code == 1 and "corrupt" in err
    assert json_of(cli, "status", "--json")["models"][0]["aliases"]["champion"] == v3


def test_rollout_start_shows_the_load_error_and_starts_nothing(
    cli: Cli, project: Path, model_file: Path
) -> None:
    import skops.io as sio

    cli("register", "churn", str(model_file))
    cli("promote", "churn", "1")
    with Store.for_project(project) as store:
        junk = store.artifacts.put(bytes(sio.dumps({"coef": [1.0]})))
        broken = store.registry.register("churn", junk, framework="sklearn", actor="t").version
    code, _, err = cli("rollout", "start", "churn", str(broken))
    assert code == 2 and err.count("\n") == 1
    assert f"model 'churn' version {broken} cannot be loaded" in err and "no predict()" in err
    assert json_of(cli, "rollout", "status", "churn", "--json")["active"] is None


@pytest.mark.parametrize(
    "text",
    [
        "model: {name: churn}\nstorage:\n  logs_url: shared/logs\n",
        '{"model": {"name": "churn"}, "storage": {"logs_url": "shared/logs"}}\n',
        'model: {name: churn}\n"\\x73torage": {logs_url: shared/logs}\n',  # the key spelled by an escape
    ],
)
def test_the_project_files_storage_section_reaches_the_store(tmp_path: Path, text: str) -> None:
    """However the file spells the section, a command's store gets its logs URL (resolved in the project)."""
    from evertrain.faces._common import storage_logs_url

    (tmp_path / "evertrain.yaml").write_text(text)
    assert storage_logs_url(tmp_path) == str((tmp_path / "shared" / "logs").resolve())
    (tmp_path / "evertrain.yaml").write_text("model: {name: churn}  # no such section\n")
    assert storage_logs_url(tmp_path) is None
