"""Time evertrain adds around a 100k-row LightGBM training, compared with the bare ``fit`` call.

The same rows, params, seed and early stopping are trained twice per repeat:

- **bare**: ``lightgbm.train`` on the training and valid parts, as a user would call it;
- **evertrain**: ``train_model`` with the inline executor, end to end: read the source
  (Parquet), window it point-in-time, snapshot train/valid/holdout into the artifact
  store, train, register, and evaluate the example's gates (threshold, paired-bootstrap
  non-inferiority against a champion, Holm-corrected slices, latency, size).

Overhead = evertrain wall time - bare fit wall time, reported as a share of the bare fit,
with the median of each stage. The local (child process) executor is timed as well,
since it adds the start of a Python process. Two widths are measured: the example's 6
features, and 30 (24 more numeric columns), closer to a usual tabular model: training
cost grows with the width, scoring for the gates much less. Results go to the
``## Training overhead`` section of ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/train_overhead.py [--repeats 3] [--rows 100000]``
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
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

import evertrain
from evertrain.data.examples import make_churn_stream
from evertrain.data.windows import make_window
from evertrain.evaluate.scoring import model_frame
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.train.pipeline import DEFAULT_NUM_THREADS, train_model

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Training overhead"
HOLDOUT_FRACTION, VALID_FRACTION = 0.2, 0.15
PARAMS = {"num_leaves": 31, "learning_rate": 0.05, "num_boost_round": 300}
EARLY_STOPPING = 30
SEED = 7
#: Numeric columns added to the example's 6 features, per measured configuration.
EXTRA_FEATURES = (0, 24)


def _spec(executor: str) -> Spec:
    return Spec.model_validate(
        {
            "model": {
                "name": "churn",
                "target": "churned",
                "trainer": {
                    "kind": "lightgbm",
                    "seed": SEED,
                    "early_stopping_rounds": EARLY_STOPPING,
                    "params": PARAMS,
                },
            },
            "data": {
                "source": {"kind": "parquet", "path": "rows.parquet"},
                "time_column": "ts",
                "label_time_column": "label_ts",
            },
            "training": {
                "window": {"kind": "expanding"},
                "valid_fraction": VALID_FRACTION,
                "holdout": {"fraction": HOLDOUT_FRACTION},
                "executor": executor,
            },
            "gates": [
                {"kind": "threshold", "metric": "roc_auc", "min": 0.6},
                {"kind": "non_inferiority", "metric": "accuracy", "margin": 0.01},
                {"kind": "slices", "column": "region", "metric": "accuracy", "margin": 0.03},
                {"kind": "size", "max_mb": 50},
                {"kind": "latency", "max_ms_per_row": 5},
            ],
        }
    )


def bare_fit(train: pd.DataFrame, valid: pd.DataFrame, features: list[str]) -> float:
    """Seconds of the plain LightGBM call on the same parts, params and early stopping."""
    X, Xv = (model_frame(f, features, categorical_as_category=True) for f in (train, valid))
    params = {k: v for k, v in PARAMS.items() if k != "num_boost_round"}
    params.update(
        objective="binary",
        verbosity=-1,
        seed=SEED,
        deterministic=True,
        force_row_wise=True,
        num_threads=DEFAULT_NUM_THREADS,
    )
    started = time.perf_counter()
    train_set = lightgbm.Dataset(X, train["churned"].astype(float))
    valid_set = lightgbm.Dataset(Xv, valid["churned"].astype(float), reference=train_set)
    lightgbm.train(
        params,
        train_set,
        num_boost_round=PARAMS["num_boost_round"],
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False)],
    )
    return time.perf_counter() - started


def measure(rows: int, repeats: int, extra_features: int) -> dict[str, Any]:
    # Enough rows that the training part (after holdout and valid) has ``rows`` rows.
    total = int(np.ceil(rows / ((1 - HOLDOUT_FRACTION) * (1 - VALID_FRACTION))))
    data = make_churn_stream(total, seed=SEED, change_at=None)
    noise = np.random.default_rng(SEED).normal(size=(total, extra_features))
    data = data.assign(**{f"extra_{i}": noise[:, i] for i in range(extra_features)})
    now = float(data["label_ts"].max()) + 1.0
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        data.to_parquet(project / "rows.parquet", index=False)
        spec = _spec("inline")
        window = make_window(data, spec, now)
        store = Store.for_project(project, clock=lambda: now).open()
        first = train_model(store, spec, project)  # the champion the measured trainings are judged against
        store.registry.promote("churn", first.version, actor="bench")
        bare, inline, local, stages = [], [], [], []
        for _ in range(repeats):
            bare.append(bare_fit(window.train, window.valid, window.columns.features))
            started = time.perf_counter()
            result = train_model(store, spec, project)
            inline.append(time.perf_counter() - started)
            stages.append(result.timings | {"fit": float(result.metrics["fit_seconds"])})
        for _ in range(repeats):
            started = time.perf_counter()
            train_model(store, _spec("local"), project)
            local.append(time.perf_counter() - started)
        store.close()
    fit = statistics.median(bare)
    median_stages = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]}
    return {
        "train_rows": len(window.train),
        "holdout_rows": len(window.holdout),
        "bare_fit": fit,
        "inline": statistics.median(inline),
        "local": statistics.median(local),
        "stages": median_stages,
        "repeats": repeats,
        "iterations": result.metrics.get("iterations_run"),
        "features": len(window.columns.features),
    }


def _share(seconds: float, fit: float) -> str:
    return f"{seconds:+.2f} s ({seconds / fit:.1%})"


def render(results: list[dict[str, Any]]) -> str:
    first = results[0]
    lines = [
        SECTION,
        "",
        f"`bench/train_overhead.py`: LightGBM on {first['train_rows']:,} training rows (up to "
        f"{PARAMS['num_boost_round']} boosting iterations, early stopping {EARLY_STOPPING}), holdout "
        f"{first['holdout_rows']:,} rows; gates: threshold, paired-bootstrap non-inferiority vs a champion "
        f"(1000 resamples), Holm-corrected slices (4), latency, size. Overhead = `train_model` wall time - "
        f"bare `lightgbm.train` wall time on the same rows and params. "
        f"Medians of {first['repeats']} repeats.",
        "",
        "| features | bare fit | `train_model` inline | overhead | of which scoring | of which the rest "
        "| `train_model` local | overhead |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        fit, score = m["bare_fit"], m["stages"].get("score", 0.0)
        over, over_local = m["inline"] - fit, m["local"] - fit
        lines.append(
            f"| {m['features']} | {fit:.2f} s | {m['inline']:.2f} s | {_share(over, fit)} "
            f"| {_share(score, fit)} | {_share(over - score, fit)} "
            f"| {m['local']:.2f} s | {_share(over_local, fit)} |"
        )
    lines += [
        "",
        "*Scoring*: predicting the holdout with the challenger (in the worker, from the registered bytes, "
        "plus the latency probe) and with the champion, which the champion-relative gates need; it grows "
        "with holdout rows x trees, not with the width of the data. *The rest*: windowing, snapshots, job "
        "files, the model's round trip through its stored format, registration, the gate statistics "
        "(bootstrap, Holm) and the run records. The local executor adds a Python process start.",
        "",
        "Stages of the inline runs (median seconds; `train` is the executor call around evertrain's own "
        "boosting loop `fit`):",
        "",
    ]
    for m in results:
        stages = m["stages"]
        names = ("window", "snapshot", "fit", "train", "register", "evaluate", "score")
        lines.append(
            f"- {m['features']} features, {m['iterations']} iterations: "
            + ", ".join(f"{k} {stages.get(k, 0.0):.3f}" for k in names)
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other work while measured), "
        f"Python {platform.python_version()}, evertrain {evertrain.__version__}, "
        f"LightGBM {lightgbm.__version__}, numpy {np.__version__}, pandas {pd.__version__}; "
        f"LightGBM threads: {DEFAULT_NUM_THREADS}.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace (or add) this benchmark's section of RESULTS.md, leaving the others untouched."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    updated = (
        pattern.sub(lambda _: text + "\n", current)
        if pattern.search(current)
        else current.rstrip() + "\n\n" + text
    )
    RESULTS.write_text(updated.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="training rows (default 100000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    text = render([measure(args.rows, args.repeats, extra) for extra in EXTRA_FEATURES])
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
