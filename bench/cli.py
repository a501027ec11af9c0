"""How long quick ``evertrain`` commands take, beside the MLflow CLI's nearest equivalents.

Each command runs as a fresh process, as a person or a script runs it, R times; the
systems take turns so that a busy machine slows them alike. The table shows the median
wall time of each, and how many times faster evertrain is (target: 5x or more), with the
CPU time (user + system) each process used.

| evertrain | MLflow 3.17 (SQLite backend) |
|---|---|
| ``evertrain --help`` | ``mlflow --help`` |
| ``evertrain status`` | ``mlflow experiments search`` (MLflow's CLI has no registry listing) |
| ``evertrain versions MODEL`` | ``python -c`` ``MlflowClient().search_model_versions`` (no CLI) |
| ``evertrain promote MODEL 2`` | ``python -c`` ``MlflowClient().set_registered_model_alias(.., 2)`` |
| ``evertrain rollback MODEL`` | ``python -c`` ``MlflowClient().set_registered_model_alias(.., 1)`` |

Where MLflow has no CLI command, the one line a user would run instead is timed. Both
stores hold one model with two versions; promote and rollback alternate, so every
promote really moves the champion. MLflow runs in its own virtual environment,
``bench/.venvs/mlflow`` (shared with ``bench/registry.py``), made on first use, or in
the Python given by ``--mlflow-python`` (one that has MLflow 3.17 installed already).
evertrain's modules are compiled to bytecode first, as installing a package does, so that
neither side pays for compiling its sources on every start.

    .venv/bin/python bench/cli.py [--repeats 7] [--mlflow-python PYTHON] [--no-write]
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _results import replace_section

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = HERE / ".venvs" / "mlflow"
MLFLOW_REQUIREMENT = "mlflow==3.17.*"
MODEL = "churn"
COMMANDS = ("--help", "status", "versions", "promote", "rollback")
TARGET_SPEEDUP = 5.0

MLFLOW_SETUP = """
import json, sys
from pathlib import Path
import mlflow
from mlflow import MlflowClient
root = Path(sys.argv[1])
client = MlflowClient()
experiment = client.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
client.create_registered_model("churn")
for k in (1, 2):
    (root / "model.json").write_text(json.dumps({"version": k}))
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(root / "model.json"), "model")
    mlflow.register_model(f"{run.info.artifact_uri}/model", "churn")
client.set_registered_model_alias("churn", "champion", 1)
"""
MLFLOW_CLIENT = "from mlflow import MlflowClient; c = MlflowClient(); "
MLFLOW_COMMANDS = {
    "--help": ["-m", "mlflow", "--help"],
    "status": ["-m", "mlflow", "experiments", "search"],
    "versions": [
        "-c",
        MLFLOW_CLIENT + "print([v.version for v in c.search_model_versions(\"name='churn'\")])",
    ],
    "promote": ["-c", MLFLOW_CLIENT + "c.set_registered_model_alias('churn', 'champion', 2)"],
    "rollback": ["-c", MLFLOW_CLIENT + "c.set_registered_model_alias('churn', 'champion', 1)"],
}
EVERTRAIN_ARGS = {
    "--help": ["--help"],
    "status": ["status"],
    "versions": ["versions", MODEL],
    "promote": ["promote", MODEL, "2"],
    "rollback": ["rollback", MODEL],
}


def ensure_mlflow() -> Path:
    """The Python of MLflow's virtual environment, made and filled on first use."""
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {MLFLOW_VENV.relative_to(HERE.parent)} for {MLFLOW_REQUIREMENT} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    found = subprocess.run([str(python), "-c", "import mlflow"], capture_output=True, check=False)
    if found.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", MLFLOW_REQUIREMENT], check=True)
    return python


def mlflow_version(python: Path) -> str:
    """The MLflow version ``python`` imports; refuses one that is not the 3.17 series compared here."""
    found = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = found.stdout.strip()
    if found.returncode != 0 or not version.startswith("3.17."):
        raise SystemExit(f"{python} does not import MLflow 3.17 ({version or found.stderr.strip()[-200:]})")
    return version


def compile_evertrain() -> None:
    """Bytecode for every evertrain module, as ``pip install`` writes it."""
    import evertrain

    compileall.compile_dir(str(Path(evertrain.__file__).parent), quiet=1)


def evertrain_project(root: Path) -> Path:
    """A churn project (``evertrain init``) with two registered scikit-learn versions, v1 champion."""
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    project = root / "shop"
    run_evertrain(project, ["init", str(project)], cwd=root)
    frame = pd.read_csv(project / "data" / "churn.csv").head(2000)
    numeric = ["tenure_months", "monthly_spend", "support_calls", "visits"]
    for c in (1.0, 0.5):
        model = LogisticRegression(C=c, max_iter=300).fit(frame[numeric], frame["churned"])
        (project / "model.skops").write_bytes(sio.dumps(model))
        run_evertrain(project, ["register", MODEL, "model.skops"])
    run_evertrain(project, ["promote", MODEL, "1"])
    return project


def run_evertrain(project: Path, args: list[str], cwd: Path | None = None) -> Timing:
    evertrain = Path(sys.executable).with_name("evertrain")
    command = [str(evertrain)] if evertrain.exists() else [sys.executable, "-m", "evertrain"]
    return timed([*command, *args], cwd=cwd or project, env=clean_env())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVERTRAIN_", "MLFLOW_"))}
    env.update(extra)
    return env


class Timing(NamedTuple):
    """One command's wall time and the CPU time (user + system) its process used."""

    wall: float
    cpu: float


def timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> Timing:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command[:4])}... failed ({done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return Timing(wall, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command per system")
    parser.add_argument("--no-write", action="store_true", help="print the table but leave RESULTS.md alone")
    parser.add_argument(
        "--mlflow-python", type=Path, help="a Python with MLflow 3.17 (default: bench/.venvs/mlflow)"
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    mlflow_python = args.mlflow_python or ensure_mlflow()
    mlflow_at = mlflow_version(mlflow_python)
    compile_evertrain()
    root = Path(tempfile.mkdtemp(prefix="evertrain-bench-cli-"))
    try:
        project = evertrain_project(root)
        mlflow_root = root / "mlflow"
        mlflow_root.mkdir()
        mlflow_env = clean_env(
            MLFLOW_TRACKING_URI=f"sqlite:///{mlflow_root / 'mlflow.db'}",
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
            GIT_PYTHON_REFRESH="quiet",
        )
        timed([str(mlflow_python), "-c", MLFLOW_SETUP, str(mlflow_root)], cwd=mlflow_root, env=mlflow_env)
        seconds: dict[tuple[str, str], list[Timing]] = {}
        for _ in range(args.repeats):
            for name in COMMANDS:  # the systems take turns, command by command
                seconds.setdefault(("evertrain", name), []).append(
                    run_evertrain(project, EVERTRAIN_ARGS[name])
                )
                seconds.setdefault(("mlflow", name), []).append(
                    timed([str(mlflow_python), *MLFLOW_COMMANDS[name]], cwd=mlflow_root, env=mlflow_env)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_at_end = os.getloadavg()

    rows = []
    for name in COMMANDS:
        ours = statistics.median(t.wall for t in seconds[("evertrain", name)])
        ours_cpu = statistics.median(t.cpu for t in seconds[("evertrain", name)])
        theirs = statistics.median(t.wall for t in seconds[("mlflow", name)])
        theirs_cpu = statistics.median(t.cpu for t in seconds[("mlflow", name)])
        mark = "" if theirs / ours >= TARGET_SPEEDUP else " (below the 5x target)"
        rows.append(
            f"| `{' '.join(['evertrain', *EVERTRAIN_ARGS[name]])}` | {ours:.3f} s | {ours_cpu:.2f} s "
            f"| {theirs:.3f} s | {theirs_cpu:.2f} s | {theirs / ours:.1f}x{mark} |"
        )
    table = "\n".join(
        [
            "| command | evertrain wall | evertrain CPU | MLflow equivalent wall | MLflow CPU "
            "| evertrain faster by (wall) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    import evertrain

    section = f"""## Command line

`bench/cli.py`: wall time of quick commands, each a fresh process, median of {args.repeats} runs,
beside the MLflow CLI's nearest equivalent (see the script's docstring for the pairs). CPU is
the user + system time the process used (median): on a busy machine wall time is mostly
waiting for a core, CPU time much less so; on an idle one the wall time comes close to it.

{table}

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
evertrain {evertrain.__version__}, MLflow {mlflow_at}; load average {load_at_start[0]:.1f} at the start,
{load_at_end[0]:.1f} at the end; {dt.date.today().isoformat()}.

"""
    print(section)
    if not args.no_write:
        replace_section("Command line", section)


if __name__ == "__main__":
    main()
