"""Monitoring cycle time as the prediction log grows: 10 parts against 10,000 parts.

A serving replica writes a part about every second under traffic, so a log that nobody
compacts holds thousands of parts after an hour. This script builds one project (a
logistic regression on a Parquet table, its first version trained and promoted by a real
controller cycle), then, for each log size, writes the prediction and feedback logs as
that many parts of each (the newest hour of traffic, older traffic before it, across
day partitions as time goes), and times whole controller cycles (monitor, decide, and the
steps after it, which find nothing to do) on a manual clock one minute apart:

- ``10 parts``: a young log;
- ``10,000 parts``: the same traffic per minute, for about a week, never compacted;
- ``10,000 parts, compacted``: the same log after ``evertrain logs compact``.

Each cycle reads only the partitions and the parts its window needs (part names carry
their time range and row count), and the champion's newest labelled window is read newest
parts first. Target: a cycle with 10,000 parts within 2x the time of one with 10. Results
go to the ``## Logs`` section of ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/logs.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evertrain.controller.clock import ManualClock
from evertrain.controller.loop import Controller
from evertrain.data import logs
from evertrain.data.logs.layout import part_name, partition_date, partition_folder
from evertrain.spec import parse_spec
from evertrain.store import Store

RESULTS = Path(__file__).with_name("RESULTS.md")
ROWS_PER_PART = 20
SECONDS_PER_PART = 60.0  # one part a minute: about a week for 10,000 parts
SPEC = """\
model:
  name: bench
  task: binary
  target: y
  features: [x0, x1, x2]
  trainer: {kind: sklearn, estimator: sklearn.linear_model.LogisticRegression, seed: 0}
data:
  source: {kind: parquet, path: data.parquet}
  time_column: ts
training: {executor: inline, window: {kind: sliding, rows: 2000}}
monitoring: {window_rows: 1000}
policy: {cycle_interval: 60s}
storage: {compact_every: 0}
"""


def _frame(n: int, rng: np.random.Generator, start: float, end: float) -> pd.DataFrame:
    x = rng.normal(size=(n, 3))
    return pd.DataFrame(
        {
            "ts": np.linspace(start, end, n),
            "x0": x[:, 0],
            "x1": x[:, 1],
            "x2": x[:, 2],
            "y": (x[:, 0] > 0).astype(int),
        }
    )


def write_log(url: str, parts: int, now: float, rng: np.random.Generator) -> None:
    """``parts`` prediction parts and as many feedback parts, one a minute, the newest ending at ``now``."""
    root = url.rstrip("/")
    for i in range(parts):
        end = now - (parts - 1 - i) * SECONDS_PER_PART
        start = end - SECONDS_PER_PART + 1.0
        rows = _frame(ROWS_PER_PART, rng, start, end)
        ids = [f"p{i}-{j}" for j in range(ROWS_PER_PART)]
        pred = pa.table(
            {
                "request_id": ids,
                "ts": rows["ts"].to_numpy(),
                "model_version": np.ones(ROWS_PER_PART, dtype=np.int64),
                "arm": ["champion"] * ROWS_PER_PART,
                "latency_ms": np.full(ROWS_PER_PART, 1.0),
                "prediction": rows["y"].to_numpy(dtype=float),
                "score": np.full(ROWS_PER_PART, 0.5),
                "x0": rows["x0"].to_numpy(),
                "x1": rows["x1"].to_numpy(),
                "x2": rows["x2"].to_numpy(),
            }
        )
        fb = pa.table(
            {"request_id": ids, "label": rows["y"].to_numpy(dtype=float), "ts": rows["ts"].to_numpy() + 0.5}
        )
        for kind, table in ((logs.PREDICTIONS, pred), (logs.FEEDBACK, fb)):
            ts = table["ts"].to_numpy()
            folder = Path(partition_folder(root, kind, "bench", partition_date(float(ts[0]))))
            folder.mkdir(parents=True, exist_ok=True)
            name = part_name(float(ts.min()), float(ts.max()), table.num_rows, f"{i:032x}")
            pq.write_table(table, folder / name)


def time_cycles(controller: Controller, clock: ManualClock, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        clock.sleep(60.0)
        started = time.perf_counter()
        result = controller.cycle()
        out.append(time.perf_counter() - started)
        assert "error" not in (result.get("monitor") or {}), result.get("monitor")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="evertrain-bench-logs-") as tmp:
        folder = Path(tmp)
        now = time.time()
        _frame(5000, rng, now - 7 * 86400, now - 3600).to_parquet(folder / "data.parquet")
        (folder / "evertrain.yaml").write_text(SPEC)
        spec = parse_spec(SPEC, base=folder)
        clock = ManualClock(now)
        store = Store(
            f"sqlite:///{folder / 'evertrain.db'}", str(folder / "artifacts"), logs_url=None, clock=clock.now
        ).open()
        rows: list[tuple[str, int, list[float]]] = []
        for label, parts, compact in (
            ("10 parts", 10, False),
            ("10,000 parts", 10_000, False),
            ("10,000 parts, compacted", 10_000, True),
        ):
            url = str(folder / f"logs-{parts}-{int(compact)}")
            store.logs_url = url
            controller = Controller(store, spec, folder, clock=clock, holder="bench")
            if not _has_model(store):
                controller.cycle()  # bootstrap: trains and promotes the first version
            write_log(url, parts, clock.now(), rng)
            if compact:
                started = time.perf_counter()
                result = logs.compact(url)
                print(f"compaction of {result.parts_before} parts: {time.perf_counter() - started:.1f}s")
            n_files = sum(1 for _ in Path(url).rglob("*.parquet"))
            times = time_cycles(controller, clock, args.repeats)
            rows.append((f"{label} ({n_files} files)", parts, times))
            print(f"{label}: {n_files} files, cycle median {statistics.median(times) * 1000:.0f} ms")
        store.close()
    report(rows, args.repeats)


def _has_model(store: Store) -> bool:
    return "bench" in store.registry.list_models()


def report(rows: list[tuple[str, int, list[float]]], repeats: int) -> None:
    base = statistics.median(rows[0][2])
    lines = [
        "## Logs",
        "",
        "`bench/logs.py`: whole controller cycles (monitor, decide, the steps after) on a manual clock "
        "one minute apart, with the prediction and feedback logs as N parts each "
        f"({ROWS_PER_PART} rows a part, one a minute: 10,000 parts is about a week of traffic never "
        f"compacted); median of {repeats} cycles. {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, local disk.",
        "",
        "| log | cycle (median) | min | max | vs 10 parts |",
        "|---|---|---|---|---|",
    ]
    for label, _, times in rows:
        median = statistics.median(times)
        lines.append(
            f"| {label} | {median * 1000:.0f} ms | {min(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms "
            f"| {median / base:.2f}x |"
        )
    lines.append("")
    section = "\n".join(lines) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if "## Logs\n" in text:
        text = re.sub(r"## Logs\n.*?(?=\n## |\Z)", section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
