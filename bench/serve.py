"""Throughput and latency of /predict: evertrain serve vs a bare FastAPI endpoint (and MLflow if it installs).

Each server runs in its own process with one worker on 127.0.0.1 and serves the same small
scikit-learn model (logistic regression on 8 numeric features). A load generator in this
process keeps CONCURRENCY keep-alive connections busy for REQUESTS single-instance requests;
servers take turns, ROUNDS times, and the medians are reported. evertrain's cost is its
routing, validation, logging (Parquet, batched) and metrics against the bare endpoint, which
parses JSON, builds the same DataFrame and calls the same model.

    python bench/serve.py [--requests N] [--rounds R] [--mlflow] [--write]

``--mlflow`` creates a virtual environment for MLflow (its pins clash with ours) and serves
the model with ``mlflow models serve``; ``--write`` puts the figures in the ``## Serving``
section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [f"f{i}" for i in range(8)]
CONCURRENCY = 4
TARGET_OVERHEAD = 0.15
HERE = Path(__file__).resolve().parent
ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
BARE_APP = """
import sys, skops.io as sio, pandas as pd
from fastapi import FastAPI, Request
data = open(sys.argv[1], "rb").read()
model = sio.loads(data, trusted=sio.get_untrusted_types(data=data) or None)
app = FastAPI()

@app.post("/v1/models/m:predict")
async def predict(request: Request):
    body = await request.json()
    X = pd.DataFrame(body["instances"])
    return {"predictions": model.predict(X).tolist()}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not come up")


def load(port: int, path: str, bodies: list[bytes], n: int) -> tuple[float, list[float]]:
    """``n`` requests over CONCURRENCY keep-alive connections: (requests per second, latencies in s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = n // CONCURRENCY

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = []
        for i in range(per_worker):
            body = bodies[(k * per_worker + i) % len(bodies)]
            start = time.perf_counter()
            conn.request("POST", path, body=body, headers={"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{path} answered {r.status}")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONCURRENCY)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies) / (time.perf_counter() - start), latencies


def build(folder: Path) -> tuple[Path, Path]:
    """A project with the model registered and promoted (and its training snapshot), and the model file."""
    import sqlalchemy as sa
    from sklearn.linear_model import LogisticRegression

    from evertrain.store import Store
    from evertrain.store.formats import get_format
    from evertrain.store.metadata import model_versions, snapshots, version_snapshots

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, len(FEATURES))), columns=FEATURES)
    y = (X["f0"] + X["f1"] - X["f2"] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    data = get_format("sklearn").dumps(model)
    model_file = folder / "model.skops"
    model_file.write_bytes(data)
    project = folder / "project"
    store = Store.for_project(project).open()
    mv = store.registry.register("m", store.artifacts.put(data), framework="sklearn", actor="bench")
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


def mlflow_server(folder: Path, model_file: Path, port: int) -> subprocess.Popen[bytes] | None:
    """MLflow's scoring server in its own virtual environment, or None if it does not install."""
    venv = folder / "mlflow-venv"
    py = venv / "bin" / "python"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "mlflow", "skops", "scikit-learn"],
            check=True,
            timeout=900,
            stdout=subprocess.DEVNULL,
        )
        saved = folder / "mlflow-model"
        code = (
            "import sys, skops.io as sio, mlflow.sklearn; d=open(sys.argv[1],'rb').read(); "
            "m=sio.loads(d, trusted=sio.get_untrusted_types(data=d) or None); "
            "mlflow.sklearn.save_model(m, sys.argv[2])"
        )
        subprocess.run([str(py), "-c", code, str(model_file), str(saved)], check=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"MLflow skipped: {exc}", file=sys.stderr)
        return None
    # mlflow starts its server with a bare `uvicorn` command: the venv's bin must be on PATH.
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    return subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(saved),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize(runs: list[tuple[float, list[float]]]) -> dict[str, float]:
    return {
        "rps": statistics.median(r for r, _ in runs),
        "p50_ms": statistics.median(float(np.percentile(lat, 50)) * 1000 for _, lat in runs),
        "p99_ms": statistics.median(float(np.percentile(lat, 99)) * 1000 for _, lat in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlflow", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in rng.normal(size=(500, len(FEATURES)))]
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows]
    mlflow_bodies = [json.dumps({"dataframe_records": [r]}).encode() for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        project, model_file = build(folder)
        (folder / "bare.py").write_text(BARE_APP)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
        ports = {"evertrain": free_port(), "bare FastAPI": free_port(), "MLflow": free_port()}
        procs = {
            "evertrain": subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    ENTRY,
                    "serve",
                    "--project",
                    str(project),
                    "--port",
                    str(ports["evertrain"]),
                ],
                env=env,
            ),
            "bare FastAPI": subprocess.Popen(
                [sys.executable, str(folder / "bare.py"), str(model_file), str(ports["bare FastAPI"])],
                env=env,
            ),
        }
        paths = {
            "evertrain": ("/v1/models/m:predict", "/readyz", bodies),
            "bare FastAPI": ("/v1/models/m:predict", "/docs", bodies),
            "MLflow": ("/invocations", "/ping", mlflow_bodies),
        }
        if args.mlflow:
            proc = mlflow_server(folder, model_file, ports["MLflow"])
            if proc is not None:
                procs["MLflow"] = proc
        results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in procs}
        try:
            for name in procs:
                wait_up(ports[name], paths[name][1])
                load(ports[name], paths[name][0], paths[name][2], 400)  # warm up
            for _ in range(args.rounds):
                for name in procs:
                    results[name].append(load(ports[name], paths[name][0], paths[name][2], args.requests))
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(60)
    figures = {name: summarize(runs) for name, runs in results.items()}
    overhead = 1.0 - figures["evertrain"]["rps"] / figures["bare FastAPI"]["rps"]
    import fastapi
    import sklearn
    import uvicorn

    lines = [
        "## Serving",
        "",
        f"`bench/serve.py --requests {args.requests} --rounds {args.rounds}`: one-instance `/predict` "
        f"requests to a logistic regression on {len(FEATURES)} features, {CONCURRENCY} keep-alive "
        "connections from a load generator on the same machine, one server process each, medians of "
        "the rounds. The machine is shared: repeat runs move each figure by several percent.",
        "",
        "| server | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {f['rps']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} |" for n, f in figures.items()),
        "",
        f"evertrain's routing, validation, logging and metrics cost {overhead:.1%} of the bare endpoint's "
        f"throughput (target: under {TARGET_OVERHEAD:.0%}).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, scikit-learn {sklearn.__version__}."
        + ("" if "MLflow" in figures else " MLflow: not run (pass --mlflow)."),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(HERE / "RESULTS.md", text)


def write_section(path: Path, section: str) -> None:
    """Replace (or add) the ``## Serving`` section of RESULTS.md, leaving the others alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = old.find("## Serving")
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start] + section + ("" if end == -1 else old[end + 1 :])
    path.write_text(new)


if __name__ == "__main__":
    main()
