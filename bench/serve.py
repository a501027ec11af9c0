"""Throughput and latency of /predict: evertrain serve vs a bare FastAPI endpoint vs MLflow's scoring server.

Every server runs in its own process (one worker, 127.0.0.1) and serves the same
gradient-boosted model: LightGBM, 100 trees on 8 numeric features, one thread. A load
generator in this process (asyncio, raw keep-alive connections, requests prepared in
advance so that the client costs little) sends one-instance requests over 1 and over 16
connections at once; the servers take turns, ROUNDS times, and the medians of the rounds
are reported. The bare endpoint parses the JSON, builds a DataFrame and calls the same
booster, as a hand-written endpoint would; evertrain also routes, checks each value
against the training schema, logs every prediction to Parquet and counts it in its
metrics. With ``--baseline-src DIR`` a second evertrain, from another checkout's ``src``
(the code before a change), is measured in the same run.

    python bench/serve.py [--requests N] [--rounds R] [--mlflow] [--baseline-src DIR] [--write]

``--mlflow`` serves the model with ``mlflow models serve`` from a virtual environment of
its own (bench/.venvs/mlflow, made on first use: MLflow's pins clash with ours);
``--write`` puts the figures in the ``## Serving`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [f"f{i}" for i in range(8)]
CONNECTIONS = (1, 16)
HERE = Path(__file__).resolve().parent
MLFLOW_VENV = HERE / ".venvs" / "mlflow"
ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
BARE_APP = """
import sys, lightgbm, pandas as pd
from fastapi import FastAPI, Request
booster = lightgbm.Booster(model_file=sys.argv[1])
features = booster.feature_name()
app = FastAPI()

@app.post("/v1/models/m:predict")
async def predict(request: Request):
    body = await request.json()
    X = pd.DataFrame(body["instances"], columns=features)
    return {"predictions": booster.predict(X, num_threads=1).tolist()}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not come up")


def request_bytes(port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
    return [f"{head}content-length: {len(b)}\r\n\r\n".encode() + b for b in bodies]


async def _connection(port: int, requests: list[bytes], offset: int, n: int, out: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(n):
            start = time.perf_counter()
            writer.write(requests[(offset + i) % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            if length is None:
                raise RuntimeError(f"no content-length in {head[:200]!r}")
            await reader.readexactly(int(length.group(1)))
            if head[9:12] != b"200":
                raise RuntimeError(f"port {port} answered {head[:200]!r}")
            out.append(time.perf_counter() - start)
    finally:
        writer.close()


def load(port: int, requests: list[bytes], connections: int, n: int) -> tuple[float, list[float]]:
    """``n`` requests over ``connections`` keep-alive connections: (requests per second, latencies in s)."""
    latencies: list[float] = []
    per = n // connections

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(
            *(_connection(port, requests, k * per, per, latencies) for k in range(connections))
        )
        return time.perf_counter() - start

    seconds = asyncio.run(run())
    return len(latencies) / seconds, latencies


def build(folder: Path) -> tuple[Path, Path]:
    """A project with the model registered and promoted (with its training snapshot), and the model file."""
    import lightgbm
    import sqlalchemy as sa

    from evertrain.store import Store
    from evertrain.store.formats import get_format
    from evertrain.store.metadata import model_versions, snapshots, version_snapshots

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, len(FEATURES))), columns=FEATURES)
    y = ((X["f0"] + X["f1"] - X["f2"] + rng.normal(scale=0.5, size=len(X))) > 0).astype(int)
    model = lightgbm.LGBMClassifier(n_estimators=100, num_threads=1, verbose=-1, random_state=0).fit(X, y)
    data = get_format("lightgbm").dumps(model)
    model_file = folder / "model.txt"
    model_file.write_bytes(data)
    project = folder / "project"
    store = Store.for_project(project).open()
    mv = store.registry.register("m", store.artifacts.put(data), framework="lightgbm", actor="bench")
    schema = {
        "columns": {
            f: {"type": "numeric", "nullable": False, "min": float(X[f].min()), "max": float(X[f].max())}
            for f in FEATURES
        }
    }
    with store.db.write() as conn:
        conn.execute(
            sa.insert(snapshots).values(
                id="bench", n_rows=len(X), schema=schema, size_bytes=0, created_at=time.time()
            )
        )
        vid = conn.execute(
            sa.select(model_versions.c.id).where(model_versions.c.version == mv.version)
        ).scalar()
        conn.execute(sa.insert(version_snapshots).values(version_id=vid, snapshot_id="bench", role="train"))
    store.registry.promote("m", mv.version, actor="bench")
    store.close()
    return project, model_file


def mlflow_python() -> Path | None:
    """The MLflow environment's Python (made on first use), or None if it cannot be made here."""
    py = MLFLOW_VENV / "bin" / "python"
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True, timeout=120)
        import lightgbm
        import sklearn

        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                "mlflow",
                f"lightgbm=={lightgbm.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                "pandas",
            ],
            check=True,
            timeout=1800,
            stdout=subprocess.DEVNULL,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"MLflow skipped: {exc}", file=sys.stderr)
        return None
    return py


def mlflow_version() -> str:
    py = MLFLOW_VENV / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('mlflow'))"
    done = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "(version unknown)"


def mlflow_server(folder: Path, model_file: Path, port: int) -> subprocess.Popen[bytes] | None:
    """MLflow's scoring server (``mlflow models serve``, one worker) on the same booster."""
    py = mlflow_python()
    if py is None:
        return None
    saved = folder / "mlflow-model"
    code = (
        "import sys, lightgbm, mlflow.lightgbm; "
        "mlflow.lightgbm.save_model(lightgbm.Booster(model_file=sys.argv[1]), sys.argv[2])"
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    subprocess.run([str(py), "-c", code, str(model_file), str(saved)], check=True, timeout=300, env=env)
    # mlflow starts its server with a bare `uvicorn` command: the venv's bin must be on PATH.
    env["PATH"] = f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command = ["models", "serve", "-m", str(saved), "--env-manager", "local"]
    return subprocess.Popen(
        [str(py.parent / "mlflow"), *command, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def evertrain_server(project: Path, port: int, src: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    if src is not None:
        env["PYTHONPATH"] = src
    command = [sys.executable, "-c", ENTRY, "serve", "--project", str(project), "--port", str(port)]
    return subprocess.Popen(command, env=env)


def summarize(runs: list[tuple[float, list[float]]]) -> dict[str, float]:
    return {
        "rps": statistics.median(r for r, _ in runs),
        "p50_ms": statistics.median(float(np.percentile(lat, 50)) * 1000 for _, lat in runs),
        "p99_ms": statistics.median(float(np.percentile(lat, 99)) * 1000 for _, lat in runs),
    }


def batch_sizes(port: int) -> float | None:
    """Mean requests per model call of the evertrain server on ``port``, from its metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    found = dict(re.findall(r"^evertrain_batch_requests_(sum|count)\{[^}]*\} (\S+)$", text, re.M))
    if not found or float(found.get("count", 0)) == 0:
        return None
    return float(found["sum"]) / float(found["count"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3200, help="requests per round at 16 connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlflow", action="store_true")
    parser.add_argument("--baseline-src", help="the src folder of another checkout, measured as 'before'")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in rng.normal(size=(500, len(FEATURES)))]
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows]
    mlflow_bodies = [json.dumps({"dataframe_records": [r]}).encode() for r in rows]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        project, model_file = build(folder)
        (folder / "bare.py").write_text(BARE_APP)
        ports: dict[str, int] = {}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        ports["evertrain"] = free_port()
        procs["evertrain"] = evertrain_server(project, ports["evertrain"], None)
        if args.baseline_src:
            ports["evertrain before"] = free_port()
            procs["evertrain before"] = evertrain_server(
                project, ports["evertrain before"], args.baseline_src
            )
        ports["bare FastAPI"] = free_port()
        bare_env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
        procs["bare FastAPI"] = subprocess.Popen(
            [sys.executable, str(folder / "bare.py"), str(model_file), str(ports["bare FastAPI"])],
            env=bare_env,
        )
        if args.mlflow:
            ports["MLflow"] = free_port()
            proc = mlflow_server(folder, model_file, ports["MLflow"])
            if proc is not None:
                procs["MLflow"] = proc
        targets = {
            name: ("/invocations", "/ping", mlflow_bodies)
            if name == "MLflow"
            else ("/v1/models/m:predict", "/readyz" if name.startswith("evertrain") else "/docs", bodies)
            for name in procs
        }
        requests = {name: request_bytes(ports[name], path, b) for name, (path, _, b) in targets.items()}
        results: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
        mean_batch: float | None = None
        try:
            for name in procs:
                wait_up(ports[name], targets[name][1], procs[name])
                load(ports[name], requests[name], 16, 800)  # warm up
            for _ in range(args.rounds):
                for connections in CONNECTIONS:
                    n = args.requests if connections > 1 else max(200, args.requests // 4)
                    for name in procs:
                        runs = results.setdefault((name, connections), [])
                        runs.append(load(ports[name], requests[name], connections, n))
            mean_batch = batch_sizes(ports["evertrain"])
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(60)
    load_after = os.getloadavg()
    figures = {key: summarize(runs) for key, runs in results.items()}
    text = report(args, figures, sorted(procs, key=list(procs).index), mean_batch, load_before, load_after)
    print(text)
    if args.write:
        sys.path.insert(0, str(HERE))
        from _results import replace_section

        replace_section("Serving", text)


def report(
    args: argparse.Namespace,
    figures: dict[tuple[str, int], dict[str, float]],
    names: list[str],
    mean_batch: float | None,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> str:
    import fastapi
    import lightgbm
    import uvicorn

    def ratio(a: str, b: str, c: int, key: str = "rps") -> str:
        if (a, c) not in figures or (b, c) not in figures:
            return "n/a"
        return f"{figures[(a, c)][key] / figures[(b, c)][key]:.2f}x"

    rows = [
        f"| {name} | {c} | {figures[(name, c)]['rps']:.0f} | {figures[(name, c)]['p50_ms']:.2f} "
        f"| {figures[(name, c)]['p99_ms']:.2f} |"
        for c in CONNECTIONS
        for name in names
    ]
    command = f"bench/serve.py --requests {args.requests} --rounds {args.rounds}"
    if args.mlflow:
        command += " --mlflow"
    if args.baseline_src:
        command += " --baseline-src SRC"
    lines = [
        "## Serving",
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d', time.gmtime())}: one-instance `/predict` requests to a "
        f"LightGBM classifier (100 trees, {len(FEATURES)} numeric features, one thread), over 1 and over 16 "
        "keep-alive connections from an asyncio load generator on the same machine, one server process "
        "each, the servers taking turns; medians of the rounds. The bare endpoint parses the JSON, builds a "
        "DataFrame and calls the same booster; evertrain also routes, checks each value against the training "
        "schema, logs every prediction to Parquet and counts it in its metrics, and gathers the requests "
        "that arrive together into one model call (`serving.batching`).",
        "",
        "| server | connections | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"At 16 connections evertrain answers {ratio('evertrain', 'MLflow', 16)} MLflow's scoring server's "
        f"requests per second (target 3x) and {ratio('evertrain', 'bare FastAPI', 16)} the bare endpoint's "
        f"(target 1.2x); its p99 is {ratio('evertrain', 'bare FastAPI', 16, 'p99_ms')} the bare endpoint's "
        "(target at most 2x). At 1 connection it answers "
        + (
            f"{ratio('evertrain', 'evertrain before', 1)} the requests per second of the code before "
            "('evertrain before'), "
            if ("evertrain before", 1) in figures
            else ""
        )
        + f"{ratio('evertrain', 'bare FastAPI', 1)} the bare endpoint's.",
        "",
    ]
    if mean_batch is not None:
        lines += [f"evertrain answered {mean_batch:.1f} requests per model call on average over the run.", ""]
    lines += [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, LightGBM {lightgbm.__version__}"
        + (
            f", MLflow {mlflow_version()} in its own virtual environment "
            "(`mlflow models serve --env-manager local -w 1`)."
            if args.mlflow
            else ", MLflow not run (pass --mlflow)."
        )
        + f" Load average (1 min) {load_before[0]:.1f} before the run and {load_after[0]:.1f} after it"
        + (
            ": the machine was shared with other work, so every figure is lower and noisier than on an "
            "idle machine; the servers took turns, so the ratios are the comparable part, though even "
            "they move by tens of percent from run to run on a machine this busy."
            if load_before[0] > 1.0  # the load after counts the run's own servers and clients
            else "."
        ),
        "",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
