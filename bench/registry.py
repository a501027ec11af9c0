"""Register + promote per second: evertrain on SQLite and PostgreSQL beside MLflow's registry.

Two flows, timed for N versions at a time, R times, with the systems taking turns so
that a busy machine slows them alike. The table shows the median rate in versions per
second and the spread.

- ``file``: a model file written to disk is stored, registered and made champion.
  evertrain: ``artifacts.put_file`` + ``registry.register`` + ``registry.promote``
  (a compare-and-swap expecting the previous champion). MLflow: ``create_run`` +
  ``log_artifact`` + ``register_model`` + ``set_registered_model_alias``.
- ``registry``: a model already stored is registered again and made champion.

MLflow (SQLite backend) runs in its own virtual environment, ``bench/.venvs/mlflow``,
made on first use, as a subprocess (``_mlflow_registry.py``). The medians and the
machine's facts go to the ``## Registry`` section of ``bench/RESULTS.md``.

    .venv/bin/python bench/registry.py [--versions 100] [--repeats 5] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _results import replace_section

import evertrain
from evertrain.store import Store

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
MLFLOW_VENV = HERE / ".venvs" / "mlflow"
MLFLOW_REQUIREMENT = "mlflow==3.17.*"
MODEL = "bench-model"
FLOWS = ("file", "registry")


def model_bytes(counter: int) -> bytes:
    """The same small model file for both systems: a JSON document of about 1.5 KiB."""
    return json.dumps({"version": counter, "weights": [counter] * 256}).encode()


class Evertrain:
    """One evertrain store, driven in this process."""

    def __init__(self, db_url: str, root: Path) -> None:
        self.store = Store(db_url, str(root / "artifacts")).open()
        self.model_file = root / "model.json"
        self.counter = 0
        self.champion: int | None = None
        self.file_to_champion()  # warms up, and leaves a stored model for the registry flow
        self.stored = self.store.registry.get_version(MODEL, 1).artifact_sha256

    def _promote(self, version: int) -> None:
        self.store.registry.promote(MODEL, version, actor="bench", expected=self.champion)
        self.champion = version

    def file_to_champion(self) -> None:
        self.counter += 1
        self.model_file.write_bytes(model_bytes(self.counter))
        digest = self.store.artifacts.put_file(self.model_file)
        self._promote(self.store.registry.register(MODEL, digest, framework="json", actor="bench").version)

    def registry_only(self) -> None:
        mv = self.store.registry.register(MODEL, self.stored, framework="json", actor="bench")
        self._promote(mv.version)

    def batch(self, flow: str, count: int) -> float:
        step: Callable[[], None] = self.file_to_champion if flow == "file" else self.registry_only
        start = time.perf_counter()
        for _ in range(count):
            step()
        return time.perf_counter() - start

    def close(self) -> None:
        self.store.close()


class MLflow:
    """MLflow's registry in its own virtual environment, driven over a pipe."""

    def __init__(self, root: Path) -> None:
        python = ensure_mlflow()
        # MLflow prints a line per registered version; keep it off the terminal, and
        # show it only if the process fails.
        self.log = (root / "mlflow.log").open("w")
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "_mlflow_registry.py"), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.version = str(self._recv()["mlflow"])

    def _recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.log.flush()
            tail = Path(self.log.name).read_text()[-3000:]
            raise RuntimeError(f"the MLflow benchmark process ended (exit {code}):\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def batch(self, flow: str, count: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{flow} {count}\n")
        self.proc.stdin.flush()
        return float(self._recv()["seconds"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


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


class PostgresSchema:
    """A throwaway schema for the PostgreSQL run, dropped at the end."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {self.name}")
            self.server = str(conn.exec_driver_sql("SHOW server_version").scalar()).split()[0]
        sep = "&" if "?" in url else "?"
        self.url = f"{url}{sep}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        self.engine.dispose()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rate(seconds: list[float], count: int) -> tuple[float, float, float]:
    rates = [count / s for s in seconds]
    return statistics.median(rates), min(rates), max(rates)


def fmt(stats: tuple[float, float, float] | None) -> str:
    if stats is None:
        return "-"
    median, low, high = stats
    return f"{median:,.0f} ({low:,.0f}-{high:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", type=int, default=100, help="versions per timed batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per flow and system")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL database to use (a throwaway schema is made in it); 'none' to skip",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table but leave RESULTS.md alone")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    seconds: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="evertrain-bench-") as tmp:
        root = Path(tmp)
        systems: dict[str, Any] = {}
        for name in ("sqlite", "postgresql", "mlflow"):
            (root / name).mkdir()
        systems["sqlite"] = Evertrain(f"sqlite:///{root / 'sqlite' / 'evertrain.db'}", root / "sqlite")
        pg: PostgresSchema | None = None
        if args.postgres_url != "none":
            try:
                pg = PostgresSchema(args.postgres_url)
                systems["postgresql"] = Evertrain(pg.url, root / "postgresql")
            except sa.exc.OperationalError as exc:
                print(f"PostgreSQL skipped: {str(exc.orig).strip()}", flush=True)
        mlflow = MLflow(root / "mlflow")
        systems["mlflow"] = mlflow
        try:
            for repeat in range(args.repeats):
                for flow in FLOWS:
                    for name, system in systems.items():
                        took = system.batch(flow, args.versions)
                        seconds.setdefault((name, flow), []).append(took)
                        print(
                            f"run {repeat + 1}/{args.repeats} {flow:<8} {name:<10} "
                            f"{args.versions / took:8,.1f} versions/s",
                            flush=True,
                        )
        finally:
            for system in systems.values():
                system.close()
            if pg is not None:
                pg.drop()

    stats = {key: rate(value, args.versions) for key, value in seconds.items()}
    names = {
        "sqlite": "evertrain SQLite",
        "postgresql": "evertrain PostgreSQL",
        "mlflow": f"MLflow {mlflow.version} SQLite",
    }
    header = ["flow", *names.values(), "evertrain SQLite / MLflow"]
    rows = []
    for flow in FLOWS:
        ratio = stats[("sqlite", flow)][0] / stats[("mlflow", flow)][0]
        rows.append([flow, *(fmt(stats.get((n, flow))) for n in names), f"{ratio:.1f}x"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table = "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    print("\nversions per second, median (min-max) of", args.repeats, "runs of", args.versions, "versions\n")
    print(table)

    facts = (
        f"{os.cpu_count()} cores ({cpu_model()}), load average {load_at_start[0]:.1f} at the start "
        f"(the machine is shared); Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"PostgreSQL {pg.server if pg else '-'}, SQLAlchemy {sa.__version__}, "
        f"evertrain {evertrain.__version__}, MLflow {mlflow.version}."
    )
    section = f"""## Registry

`bench/registry.py`, {dt.date.today().isoformat()}: a version registered and made champion, in
versions per second, median (min-max) of {args.repeats} runs of {args.versions} versions each, the
systems taking turns.

{table}

- **file**: a model file (about 1.5 KiB) written to disk is stored, registered and made champion.
  evertrain: `artifacts.put_file` (sha256, written to a temporary name, fsync, rename) + `registry.register`
  + `registry.promote` (compare-and-swap on the previous champion; the move, its history row and its audit
  entry in one transaction). MLflow: `create_run` + `log_artifact` + `register_model` +
  `set_registered_model_alias`.
- **registry**: a model already stored is registered again and made champion (no file I/O).
- Machine: {facts}
- On this disk one fsync takes a few milliseconds and is most of evertrain's time in the file flow;
  evertrain keeps it so that a registered version never outlives its artifact after a power cut.
"""
    if not args.no_write:
        replace_section("Registry", section)
        print(f"\nwrote the Registry section of {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
