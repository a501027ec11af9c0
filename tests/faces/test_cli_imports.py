"""Quick commands import only what they use: checked in a fresh interpreter's ``sys.modules``.

What a command imports decides how long it takes to start (pandas, SQLAlchemy, LightGBM
and scipy.stats each cost a good share of a second); the check is on the modules, never
on a clock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HEAVY = (
    "pandas",
    "sqlalchemy",
    "lightgbm",
    "sklearn",
    "scipy.stats",
    "fastapi",
    "evertrain.spec",
    "pydantic",
)

_PROBE = """
import contextlib, io, json, sys
from evertrain.faces.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _fresh(code: str, args: list[str], cwd: Path) -> Any:
    """The JSON that ``code`` prints last, run with ``args`` in a fresh interpreter in ``cwd``."""
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _modules(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    result = _fresh(_PROBE, args, cwd)
    return result["code"], set(result["modules"])


@pytest.mark.parametrize(
    ("args", "also_absent"),
    [
        (["--version"], ("rich", "numpy", "pyarrow")),
        (["--help"], ("numpy", "pyarrow")),
        (["drift", "--help"], ("pyarrow", "scipy")),
        (["validate", "--help"], ("pyarrow",)),
        (["status", "--help"], ()),
        (["promote", "--help"], ()),
    ],
)
def test_quick_commands_skip_heavy_imports(
    args: list[str], also_absent: tuple[str, ...], tmp_path: Path
) -> None:
    code, modules = _modules(args, tmp_path)
    assert code == 0
    loaded = sorted(m for m in (*HEAVY, *also_absent) if m in modules)
    assert not loaded, f"evertrain {' '.join(args)} imported {loaded}"


#: What the registry commands must not load: they read and move rows of the metadata store
#: (SQLAlchemy) and, for a promotion, hash one local artifact. Alembic is for a store that
#: is not at the newest migration, fsspec for artifacts away from the local disk, the spec's
#: models for commands that read the whole project file, pydantic for typer's readers of
#: values other than strings, paths and flags, tenacity for a write that failed and is
#: tried again.
REGISTRY_ABSENT = (
    "pydantic",
    "tenacity",
    "pandas",
    "numpy",
    "pyarrow",
    "lightgbm",
    "sklearn",
    "skops",
    "scipy",
    "fastapi",
    "alembic",
    "fsspec",
    "evertrain.spec",
)


@pytest.fixture(scope="module")
def registry_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn example with two registered scikit-learn versions, version 1 the champion."""
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from evertrain.faces.cli import main
    from evertrain.store import Store

    folder = tmp_path_factory.mktemp("registry") / "shop"
    assert main(["init", str(folder)]) == 0
    frame = pd.read_csv(folder / "data" / "churn.csv").head(500)
    numeric = ["tenure_months", "monthly_spend", "support_calls", "visits"]
    with Store.for_project(folder) as store:
        for c in (1.0, 0.5):
            model = LogisticRegression(C=c, max_iter=300).fit(frame[numeric], frame["churned"])
            digest = store.artifacts.put(bytes(sio.dumps(model)))
            store.registry.register("churn", digest, framework="sklearn", actor="test")
        store.registry.promote("churn", 1, actor="test")
    return folder


@pytest.mark.parametrize(
    ("args", "champion_before", "champion_after"),
    [
        (["status"], 1, 1),
        (["status", "--json"], 1, 1),
        (["versions", "churn"], 1, 1),
        (["promote", "churn", "2"], 1, 2),
        (["rollback", "churn"], 2, 1),
    ],
)
def test_registry_commands_load_only_the_metadata_store(
    args: list[str], champion_before: int, champion_after: int, registry_example: Path, tmp_path: Path
) -> None:
    """status, versions, promote and rollback on a store at the newest migration: they work
    (the champion moves as asked) without Alembic, fsspec, pydantic, tenacity or any framework."""
    from evertrain.store import Store

    project = tmp_path / "shop"
    shutil.copytree(registry_example, project)
    with Store.for_project(project) as store:
        if champion_before != 1:
            store.registry.promote("churn", champion_before, actor="test")
    code, modules = _modules(args, project)
    assert code == 0
    with Store.for_project(project) as store:
        assert store.registry.get_alias("churn", "champion") == champion_after
    assert "sqlalchemy" in modules  # the real store was read
    loaded = sorted(m for m in REGISTRY_ABSENT if m in modules)
    assert not loaded, f"evertrain {' '.join(args)} imported {loaded}"
    if args[0] != "status":
        # only status reads the project file (for the configured model's name), and this
        # one has no storage section: the others need no YAML parser
        assert "yaml" not in modules


def test_drift_imports_neither_pandas_nor_scipy_stats(tmp_path: Path) -> None:
    """A whole drift run on Parquet, profiled path included: Arrow and numpy, not pandas."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    from evertrain.monitor.kolmogorov import ASYMPTOTIC_N

    n = 2 * ASYMPTOTIC_N  # an effective KS sample size where the p-value needs no scipy.stats
    for name, shift in (("ref.parquet", 0.0), ("cur.parquet", 0.5)):
        pq.write_table(
            pa.table(
                {"x": rng.normal(shift, 1, n), "k": rng.integers(0, 5, n), "c": rng.choice(["a", "b"], n)}
            ),
            tmp_path / name,
        )
    code, modules = _modules(
        ["drift", "ref.parquet", "cur.parquet", "--json", "out.json", "--save-profile", "ref.json"], tmp_path
    )
    assert code == 1  # x drifted
    assert not [m for m in ("pandas", "scipy.stats", "sqlalchemy", "datasketches") if m in modules]
    first = json.loads((tmp_path / "out.json").read_text())
    code, modules = _modules(["drift", "ref.json", "cur.parquet", "--json", "again.json"], tmp_path)
    assert code == 1
    assert not [m for m in ("pandas", "scipy.stats", "sqlalchemy") if m in modules]
    assert json.loads((tmp_path / "again.json").read_text())["columns"] == first["columns"]
    assert first["drifted_columns"] == ["x"]


# Strings, paths and flags read without typer's pydantic adapters read exactly as typer
# reads them: the same small command runs on the same command lines in this process with
# typer's own readers, and in a fresh interpreter with ``read_plain_values``, which must
# then never import pydantic. Values, their types and the errors must be the same.

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


def _own() -> list[dict[str, object]]:
    namespace: dict[str, object] = {}
    exec(_APP, namespace)
    return [namespace["run"](args, False) for args in CASES]  # type: ignore[operator]


def test_plain_values_read_as_typer_reads_them_without_pydantic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    expected = _own()
    assert expected[3]["error"] == "BadParameter" and "does not exist" in str(expected[3]["message"])
    assert expected[4]["error"] == "BadParameter" and "is a directory" in str(expected[4]["message"])

    probe = (
        _APP
        + "\nimport sys\nprint(json.dumps({'runs': [run(a, True) for a in json.loads(sys.argv[1])],"
        + " 'pydantic': 'pydantic' in sys.modules}))"
    )
    got = _fresh(probe, [json.dumps(CASES)], tmp_path)
    assert got["runs"] == expected
    assert not got["pydantic"], "reading plain values imported pydantic"
