"""Time evertrain adds around a 100k-row LightGBM training, compared with the bare ``fit`` call.

The same rows, params, seed and early stopping are trained twice per repeat:

- **bare**: the feature frame (text columns as categoricals, as LightGBM needs) and
  ``lightgbm.train`` on the training and valid parts, as a user would write it;
- **evertrain**: ``train_model`` end to end: read the source (Parquet), window it
  point-in-time, snapshot train/valid/holdout into the artifact store, train, register,
  and evaluate the example's gates (threshold, paired-bootstrap non-inferiority against a
  champion, Holm-corrected slices, latency, size).

Each repeat appends new rows to the source (a later cut-off), as successive retrains do, so
every training stores new snapshots rather than finding them stored. Overhead = evertrain
wall time - bare wall time, as a share of the bare time; CPU seconds are reported too,
since evertrain scores the holdout and stores snapshots on a second core while the
(single-threaded) fit runs. Executors: ``inline`` (in this process), ``local`` cold (a
Python process started for the job, as a one-off ``evertrain train`` does) and ``local``
warm (the worker ``evertrain run`` keeps started ahead between trainings). Two widths: the
example's 6 features, and 30 (24 more numeric columns). Results go to the
``## Training overhead`` section of ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/train_overhead.py [--repeats 5] [--rows 100000]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
from _results import replace_section

import evertrain
from evertrain.data.examples import make_churn_stream
from evertrain.data.windows import make_window
from evertrain.evaluate.scoring import model_frame
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.train.pipeline import train_model
from evertrain.train.stages import DEFAULT_NUM_THREADS

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
    X, Xv = (model_frame(f, features, categorical_as_category=True) for f in (train, valid))
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


#: Rows that arrive between two retrains (each repeat trains on a slightly later window).
NEW_ROWS_PER_RETRAIN = 500
#: Seconds left to a warm worker to start and warm up before the next training (a
#: controller's cycles are minutes apart).
WARM_UP_SECONDS = 5.0


class _Source:
    """The project's data source, growing by a batch of rows before each training."""

    def __init__(self, project: Path, rows: int, extra_features: int, retrains: int) -> None:
        total = rows + NEW_ROWS_PER_RETRAIN * (retrains + 1)
        data = make_churn_stream(total, seed=SEED, change_at=None)
        noise = np.random.default_rng(SEED).normal(size=(total, extra_features))
        self.data = data.assign(**{f"extra_{i}": noise[:, i] for i in range(extra_features)})
        self.project, self.rows, self.now = project, rows, 0.0

    def advance(self, k: int) -> pd.DataFrame:
        """Rows known at the k-th training, written as the source; the store's clock moves past them."""
        known = self.data.iloc[: self.rows + NEW_ROWS_PER_RETRAIN * k]
        known.to_parquet(self.project / "rows.parquet", index=False)
        self.now = float(known["label_ts"].max()) + 1.0
        return known


#: How each measured training runs: the executor, and whether a worker is kept warm.
MODES = {"inline": ("inline", False), "local warm": ("local", True), "local cold": ("local", False)}


def measure(rows: int, repeats: int, extra_features: int) -> dict[str, Any]:
    """Per mode, ``repeats`` pairs of (bare fit, ``train_model``) on the same new window."""
    from evertrain.train.executors import LocalExecutor

    # Enough rows that the training part (after holdout and valid) has ``rows`` rows.
    total = int(np.ceil(rows / ((1 - HOLDOUT_FRACTION) * (1 - VALID_FRACTION))))
    out: dict[str, Any] = {"repeats": repeats, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        source = _Source(project, total, extra_features, len(MODES) * repeats)
        source.advance(0)
        store = Store.for_project(project, clock=lambda: source.now).open()
        first = train_model(store, _spec("inline"), project)  # the champion the trainings are judged on
        store.registry.promote("churn", first.version, actor="bench")
        k = 0
        for mode, (executor, warm) in MODES.items():
            LocalExecutor.keep_warm(warm)
            pairs: dict[str, list[float]] = {"bare": [], "evertrain": [], "cpu_bare": [], "cpu_evertrain": []}
            stages: list[dict[str, float]] = []
            scoring: set[str] = set()
            for _ in range(repeats):
                k += 1
                window = make_window(source.advance(k), _spec(executor), source.now)
                if warm:
                    time.sleep(WARM_UP_SECONDS)
                cpu = time.process_time()
                pairs["bare"].append(bare_fit(window.train, window.valid, window.columns.features))
                pairs["cpu_bare"].append(time.process_time() - cpu)
                cpu, started = time.process_time(), time.perf_counter()
                result = train_model(store, _spec(executor), project)
                pairs["evertrain"].append(time.perf_counter() - started)
                pairs["cpu_evertrain"].append(time.process_time() - cpu)
                stages.append(result.timings | {"fit": float(result.metrics["fit_seconds"])})
                scoring.add(str(store.runs.get(result.run_id).result["info"].get("holdout_scoring")))
            over = [e - b for e, b in zip(pairs["evertrain"], pairs["bare"], strict=True)]
            share = [o / b for o, b in zip(over, pairs["bare"], strict=True)]
            out["modes"][mode] = {
                **{key: statistics.median(values) for key, values in pairs.items()},
                "overhead": statistics.median(over),
                "share": statistics.median(share),
                "stages": {key: statistics.median(s.get(key, 0.0) for s in stages) for key in stages[0]},
                "scoring": sorted(scoring),
                "iterations": result.metrics.get("iterations_run"),
            }
        LocalExecutor.keep_warm(False)
        store.close()
    out.update(
        train_rows=len(window.train), holdout_rows=len(window.holdout), features=len(window.columns.features)
    )
    return out


def _share(seconds: float, share: float) -> str:
    return f"{seconds:+.2f} s ({share:.1%})"


def render(results: list[dict[str, Any]]) -> str:
    first = results[0]
    lines = [
        SECTION,
        "",
        f"`bench/train_overhead.py`: LightGBM on about {first['train_rows']:,} training rows (up to "
        f"{PARAMS['num_boost_round']} boosting iterations, early stopping {EARLY_STOPPING}), holdout "
        f"{first['holdout_rows']:,} rows; gates: threshold, paired-bootstrap non-inferiority vs a champion "
        f"(1000 resamples), Holm-corrected slices (4), latency, size. Before each training "
        f"{NEW_ROWS_PER_RETRAIN} new rows arrive, so every training stores new snapshots; the bare fit "
        f"(feature frame + `lightgbm.train`, same rows, params, seed and threads) runs on the same window "
        f"just before it. Overhead = `train_model` wall time - bare wall time, median of "
        f"{first['repeats']} such pairs per row.",
        "",
        "| features | executor | bare fit | `train_model` | overhead | CPU overhead |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for m in results:
        for mode, r in m["modes"].items():
            cpu = r["cpu_evertrain"] - r["cpu_bare"]
            cpu_text = f"{cpu:+.2f} s ({cpu / r['cpu_bare']:.1%})" if mode == "inline" else "-"
            lines.append(
                f"| {m['features']} | {mode} | {r['bare']:.2f} s | {r['evertrain']:.2f} s "
                f"| {_share(r['overhead'], r['share'])} | {cpu_text} |"
            )
    lines += [
        "",
        "*CPU overhead* (inline only: the other executors spend theirs in a child process): process CPU "
        "seconds of `train_model` minus those of the bare fit. Most of it is scoring the holdout with the "
        "challenger (tree by tree while it trains) and with the champion (the paired gates need both), "
        "done on the second core during the single-threaded fit, so the wall-clock overhead is a fraction "
        "of it. *local*: the job runs in a child process and reads the snapshot tables from Arrow files; "
        "a cold start (a one-off `evertrain train`) pays a Python start and its imports, which the worker "
        "that `evertrain run` keeps warm between trainings has done already. On this 2-vCPU virtual "
        "machine the work beside the fit is not free (it slows the fit by a few percent), and whole reruns "
        "of this script move the 6-feature overheads by several points.",
        "",
        "Stages (median seconds; `fit` is evertrain's boosting loop, `train` the executor call around it, "
        "`snapshot` what the training waited for its snapshots, `score` the latency probe and the last "
        "trees of the holdout scores):",
        "",
    ]
    names = ("window", "snapshot", "fit", "train", "register", "evaluate", "score")
    for m in results:
        for mode, r in m["modes"].items():
            lines.append(
                f"- {m['features']} features, {mode}, {r['iterations']} iterations: "
                + ", ".join(f"{key} {r['stages'].get(key, 0.0):.3f}" for key in names)
                + f"; holdout scored {', '.join(r['scoring'])}"
            )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"evertrain {evertrain.__version__}, LightGBM {lightgbm.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}; LightGBM threads: {DEFAULT_NUM_THREADS} in both.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="training rows (default 100000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    text = render([measure(args.rows, args.repeats, extra) for extra in EXTRA_FEATURES])
    text = text.rstrip("\n") + (
        f" Load average (1 min, `uptime`) {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the "
        "end: the machine is shared, and every figure of a row comes from pairs run back to back.\n"
    )
    print(text)
    if not args.no_write:
        replace_section(SECTION.removeprefix("## "), text)


if __name__ == "__main__":
    main()
