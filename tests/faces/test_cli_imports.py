"""Quick commands import only what they use: checked in a fresh interpreter's ``sys.modules``.

What a command imports decides how long it takes to start (pandas, SQLAlchemy, LightGBM
and scipy.stats each cost a good share of a second); the check is on the modules, never
on a clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pandas", "sqlalchemy", "lightgbm", "sklearn", "scipy.stats", "fastapi", "evertrain.spec")

_PROBE = """
import contextlib, io, json, sys
from evertrain.faces.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
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
