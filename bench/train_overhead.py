"""Time evertrain adds around a 100k-row LightGBM training, compared with a bare LightGBM training.

The same rows, params, seed and early stopping are trained by both sides of each pair:

- **anchor**: the feature frame (text columns as categoricals, as LightGBM needs) and
  ``lightgbm.train`` on the training and valid parts, as a user would write it: in this
  process (*bare fit*), or, against a cold training, as a script started as a process of
  its own that imports LightGBM and reads the parts from Parquet (*bare script*,
  ``bench/_bare_lightgbm.py``);
- **evertrain**: ``train_model`` end to end: read the source (Parquet), window it
  point-in-time, snapshot train/valid/holdout into the artifact store, train, register,
  and evaluate the example's gates (threshold, paired-bootstrap non-inferiority against a
  champion, Holm-corrected slices, latency, size).

Each training appends new rows to the source (a later cut-off), as successive retrains do,
so every training stores new snapshots rather than finding them stored. Overhead =
evertrain's time - the anchor's, as a share of the anchor's, in wall-clock seconds and in
CPU seconds of the whole process tree (evertrain scores the holdout and stores snapshots on
a second core while the single-threaded fit runs, so on an idle machine its wall overhead
is a fraction of its CPU overhead). Executors: ``inline`` (in this process), ``local``
cold (a Python process started for the job, as a one-off ``evertrain train`` does) and
``local`` warm (the worker ``evertrain run`` keeps started ahead between trainings). Two
widths: the example's 6 features, and 30 (24 more numeric columns). Results go to the
``## Training overhead`` section of ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/train_overhead.py [--repeats 9] [--rows 100000] [--extra-features 0 24]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pyarrow as pa
from _results import replace_section

import evertrain
from evertrain.data.examples import make_churn_stream
from evertrain.data.windows import make_window
from evertrain.evaluate.scoring import model_frame
from evertrain.settings import use_system_arrow_allocator
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.train.pipeline import train_model
from evertrain.train.stages import DEFAULT_NUM_THREADS

SECTION = "## Training overhead"
HOLDOUT_FRACTION, VALID_FRACTION = 0.2, 0.15
#: LightGBM's own default leaf size, named so that both sides surely use the same (evertrain
#: chooses one by the number of rows when the spec names none).
PARAMS = {"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 20, "num_boost_round": 300}
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


def _bare_params() -> dict[str, Any]:
    params = {k: v for k, v in PARAMS.items() if k != "num_boost_round"}
    params.update(
        objective="binary",
        verbosity=-1,
        seed=SEED,
        deterministic=True,
        force_row_wise=True,
        num_threads=DEFAULT_NUM_THREADS,
    )
    return params


def bare_fit(train: pd.DataFrame, valid: pd.DataFrame, features: list[str]) -> int:
    """The plain LightGBM call on the same parts, params and early stopping, in this process;
    returns the iterations it kept."""
    X, Xv = (model_frame(f, features, categorical_as_category=True) for f in (train, valid))
    train_set = lightgbm.Dataset(X, train["churned"].astype(float))
    valid_set = lightgbm.Dataset(Xv, valid["churned"].astype(float), reference=train_set)
    booster = lightgbm.train(
        _bare_params(),
        train_set,
        num_boost_round=PARAMS["num_boost_round"],
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False)],
    )
    return int(booster.best_iteration)


def bare_script(folder: Path, train: pd.DataFrame, valid: pd.DataFrame, features: list[str]) -> Any:
    """A bare LightGBM training script started as a process of its own, on the same parts
    (written as Parquet beforehand, untimed); returns a callable that runs it and gives the
    iterations it kept."""
    paths = {}
    for name, frame in (("train", train), ("valid", valid)):
        paths[name] = str(folder / f"bare-{name}.parquet")
        frame[[*features, "churned"]].to_parquet(paths[name], index=False)
    job = dict(
        paths,
        features=features,
        target="churned",
        params=_bare_params(),
        rounds=PARAMS["num_boost_round"],
        early_stopping=EARLY_STOPPING,
    )
    command = [sys.executable, str(Path(__file__).with_name("_bare_lightgbm.py")), json.dumps(job)]

    def run() -> int:
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        return int(json.loads(out.stdout.strip().splitlines()[-1])["best"])

    return run


def _ticks(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[float, float]:
    """Seconds since boot, over all CPUs, of (every state, steal): steal is time a virtual
    machine's CPUs were ready to run and the hypervisor ran something else."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return sum(fields[:8]) / tick, (fields[7] if len(fields) > 7 else 0) / tick


def _live_children() -> dict[int, float]:
    """This process's live child processes and the CPU seconds each has used so far."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (task / "children").read_text().split())
    return {pid: _ticks(pid) for pid in pids}


def _settle() -> None:
    """Wait until the worker kept warm has done its imports and warm-up (at least
    :data:`WARM_UP_SECONDS`, then until the child processes use no more CPU): on a busy
    machine they take longer than on an idle one, and a controller's cycles are minutes apart."""
    time.sleep(WARM_UP_SECONDS)
    deadline = time.monotonic() + 120
    last = sum(_live_children().values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(_live_children().values())
        if now == last:
            return
        last = now


class TreeClock:
    """Wall and CPU seconds of a block, CPU counted over the whole process tree: this process
    (all its threads) and every child process that ended within the block or was ending as it
    ended (its CPU is taken once it has exited; the wall time is not). A child that was
    already running before the block (a worker kept warm, which did its imports ahead) counts
    only for what it used within the block; a child started within the block and still running
    after it (the next warm worker) does not count."""

    def __enter__(self) -> TreeClock:
        self._before = _live_children()
        self._cpu = self._tree_cpu()
        self._wall = time.perf_counter()
        return self

    @staticmethod
    def _tree_cpu() -> float:
        own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        # A training step lets the worker that ran its job go while it exits (and starts the
        # next warm worker only then): its CPU counts once it has ended and been reaped (a
        # child is listed, as a zombie, until then). The worker kept warm for the next job
        # (waiting for it, or still importing) is not waited for.
        from evertrain.train.executors import LocalExecutor

        spare = LocalExecutor._spare
        kept = {spare.proc.pid} if spare is not None else set()
        going = {
            pid
            for pid, cpu in _live_children().items()
            if pid not in kept and cpu - self._before.get(pid, 0.0) > 0.05
        }
        deadline = time.monotonic() + 60
        while going & set(_live_children()) and time.monotonic() < deadline:
            time.sleep(0.005)
        after = _live_children()
        ahead = sum(cpu for pid, cpu in self._before.items() if pid not in after)
        self.cpu = self._tree_cpu() - self._cpu - ahead


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


#: How each measured training runs: the executor, whether a worker is kept warm, and the
#: anchor it is compared with (``fit``: the bare fit in this process; ``script``: a bare
#: training script started as a process, as the cold training starts one for its job).
MODES = {
    "inline": ("inline", False, "fit"),
    "local warm": ("local", True, "fit"),
    "local cold": ("local", False, "script"),
}


def measure(rows: int, repeats: int, extra_features: int, modes: list[str] | None = None) -> dict[str, Any]:
    """Per mode, ``repeats`` pairs of (anchor, ``train_model``) on the same new window.

    The modes take turns within each repeat, and within a pair the anchor runs first in
    even repeats and second in odd ones, so that a change of load over the run weighs on
    both sides alike. The cold training is also compared with the bare fit in this process
    (``fit``), as earlier versions of this benchmark did.
    """
    from evertrain.train.executors import LocalExecutor
    from evertrain.train.overlap import ChampionScorer

    # Enough rows that the training part (after holdout and valid) has ``rows`` rows.
    total = int(np.ceil(rows / ((1 - HOLDOUT_FRACTION) * (1 - VALID_FRACTION))))
    measured = {m: MODES[m] for m in modes or MODES}
    out: dict[str, Any] = {"repeats": repeats, "modes": {}}
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in measured}
    stages: dict[str, list[dict[str, float]]] = {m: [] for m in measured}
    scoring: dict[str, set[str]] = {m: set() for m in measured}
    iterations: dict[str, list[int]] = {m: [] for m in measured}
    champion_rows: dict[str, list[int | None]] = {m: [] for m in measured}
    mismatched: list[str] = []
    arrow_default = pa.default_memory_pool()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        source = _Source(project, total, extra_features, len(measured) * repeats)
        source.advance(0)
        store = Store.for_project(project, clock=lambda: source.now).open()
        first = train_model(store, _spec("inline"), project)  # the champion the trainings are judged on
        store.registry.promote("churn", first.version, actor="bench")
        k = 0
        for repeat in range(repeats):
            for mode, (executor, warm, anchor) in measured.items():
                k += 1
                window = make_window(source.advance(k), _spec(executor), source.now)
                parts = (window.train, window.valid, window.columns.features)
                anchors = {"fit": lambda parts=parts: bare_fit(*parts)}
                if anchor == "script":
                    anchors["script"] = bare_script(project, *parts)
                LocalExecutor.keep_warm(warm)
                # Arrow's allocator as in the process that runs these trainings: the controller
                # of `evertrain run` for inline and warm, a one-off `evertrain train` (Arrow's
                # default) for cold; the worker chooses its own.
                pa.set_memory_pool(arrow_default)
                if anchor == "fit":
                    use_system_arrow_allocator()
                if anchor == "script":
                    # A one-off `evertrain train` starts with nothing of the trainings before it.
                    ChampionScorer.forget()

                # The spec is made before the clock starts: a controller loads its spec once, and
                # the anchor's params are a literal (validating the spec took 0.5 to 6 ms).
                spec = _spec(executor)

                def ours(spec: Spec = spec) -> Any:
                    return train_model(store, spec, project)

                runs = [*anchors.items(), ("evertrain", ours)]
                if repeat % 2:
                    runs.reverse()
                got: dict[str, Any] = {}
                for name, work in runs:
                    if warm:
                        # Each side after the worker kept warm is idle: the next one, started
                        # as a training ends, imports and warms up for a few seconds, which
                        # must not weigh on an anchor that follows the training.
                        _settle()
                    with TreeClock() as clock:
                        got[name] = work()
                    samples[mode].setdefault(f"wall_{name}", []).append(clock.wall)
                    samples[mode].setdefault(f"cpu_{name}", []).append(clock.cpu)
                walls = {n: samples[mode][f"wall_{n}"][-1] for n, _ in runs}
                print(
                    f"{len(window.columns.features)} features, {mode}, pair {repeat + 1}: "
                    + ", ".join(f"{n} {w:.3f} s" for n, w in walls.items()),
                    file=sys.stderr,
                    flush=True,
                )
                LocalExecutor.keep_warm(False)
                result = got["evertrain"]
                kept = int(result.metrics.get("best_iteration") or 0)
                iterations[mode].append(int(result.metrics.get("iterations_run") or 0))
                # The same work on both sides: the same boosting iterations kept.
                mismatched += [f"{mode} {n}: {got[n]} vs {kept}" for n in anchors if got[n] != kept]
                stages[mode].append(result.timings | {"fit": float(result.metrics["fit_seconds"])})
                recorded = store.runs.get(result.run_id).result
                scoring[mode].add(str(recorded["info"].get("holdout_scoring")))
                champion_rows[mode].append(recorded.get("champion_rows_predicted"))
        store.close()
    for mode, (_, _, anchor) in measured.items():
        s = samples[mode]
        med = {key: statistics.median(values) for key, values in s.items()}
        row: dict[str, Any] = {"anchor": anchor, **med}
        for name in ("fit", "script"):
            if f"wall_{name}" in s:
                for kind in ("wall", "cpu"):
                    ours, theirs = s[f"{kind}_evertrain"], s[f"{kind}_{name}"]
                    shares = [(e - b) / b for e, b in zip(ours, theirs, strict=True)]
                    row[f"{kind}_share_{name}"] = statistics.median(shares)
                    row[f"{kind}_range_{name}"] = median_interval(shares)
                    row[f"{kind}_over_{name}"] = statistics.median(
                        e - b for e, b in zip(ours, theirs, strict=True)
                    )
        row["stages"] = {
            key: statistics.median(x.get(key, 0.0) for x in stages[mode]) for key in stages[mode][0]
        }
        row["scoring"] = sorted(scoring[mode])
        row["iterations"] = statistics.median(iterations[mode])
        known = [n for n in champion_rows[mode] if n is not None]
        row["champion_rows"] = statistics.median(known) if known else None
        out["modes"][mode] = row
    out.update(
        train_rows=len(window.train),
        holdout_rows=len(window.holdout),
        features=len(window.columns.features),
        mismatched=mismatched,
    )
    return out


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median of ``values`` (the sign test's order
    statistics): on this shared machine single pairs differ by tens of percent, so the
    median alone says too little. None when there are too few values for ``confidence``.

    >>> median_interval([float(v) for v in range(1, 10)])
    (2.0, 8.0)
    """
    ordered, n = sorted(values), len(values)
    below = 0.0
    k = -1  # the largest k with P(Binomial(n, 1/2) <= k) <= (1 - confidence) / 2
    for i in range(n):
        below += math.comb(n, i) / 2**n
        if below > (1 - confidence) / 2:
            break
        k = i
    return None if k < 0 else (ordered[k], ordered[n - 1 - k])


def _share(seconds: float, share: float, interval: tuple[float, float] | None = None) -> str:
    text = f"{seconds:+.2f} s ({share:+.1%}"
    if interval is not None:
        text += f"; 95% {interval[0]:+.1%} to {interval[1]:+.1%}"
    return text + ")"


ANCHORS = {"fit": "bare fit, in process", "script": "bare script, own process"}


def render(results: list[dict[str, Any]], load: tuple[float, float], steal: float | None = None) -> str:
    first = results[0]
    lines = [
        SECTION,
        "",
        f"`bench/train_overhead.py`: LightGBM on about {first['train_rows']:,} training rows (up to "
        f"{PARAMS['num_boost_round']} boosting iterations, early stopping {EARLY_STOPPING}), holdout "
        f"{first['holdout_rows']:,} rows; gates: threshold, paired-bootstrap non-inferiority vs a champion "
        f"(1000 resamples), Holm-corrected slices (4), latency, size. Before each training "
        f"{NEW_ROWS_PER_RETRAIN} new rows arrive, so every training stores new snapshots. Each training "
        "is paired with an anchor on the same window, same rows, params, seed and threads: the *bare fit* "
        "(feature frame + `lightgbm.train` in this process, whose imports are done) or, for the cold "
        "training, which starts a Python process for its job, the *bare script* (a process that imports "
        "LightGBM and pandas, reads the train and valid parts from Parquet, builds the frame and trains; "
        "neither side imports scikit-learn). Both sides keep the same boosting iterations in every pair"
        + (
            "."
            if not any(r["mismatched"] for r in results)
            else f" except: {'; '.join(m for r in results for m in r['mismatched'])}."
        )
        + f" Median of {first['repeats']} pairs per row (the wall overhead with a 95% interval of its "
        "median, from the sign test: single pairs on a shared machine differ by tens of percent); the "
        "modes take turns within each repeat and "
        "the anchor runs first in every other pair; before each side of a warm pair the benchmark waits "
        "until the worker kept warm is idle (the next one warms up as a training ends). *CPU*: user + "
        "system seconds of the whole process "
        "tree (this process's threads and the child processes that ran for the training; a warm worker "
        "counts only from the moment it gets its job).",
        "",
        "| features | executor | anchor | anchor wall | `train_model` wall | wall overhead "
        "| anchor CPU | `train_model` CPU | CPU overhead |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        for mode, r in m["modes"].items():
            names = [r["anchor"]] + (["fit"] if r["anchor"] != "fit" else [])
            for name in names:
                lines.append(
                    f"| {m['features']} | {mode} | {ANCHORS[name]} | {r[f'wall_{name}']:.2f} s "
                    f"| {r['wall_evertrain']:.2f} s "
                    f"| {_share(r[f'wall_over_{name}'], r[f'wall_share_{name}'], r[f'wall_range_{name}'])} "
                    f"| {r[f'cpu_{name}']:.2f} s | {r['cpu_evertrain']:.2f} s "
                    f"| {_share(r[f'cpu_over_{name}'], r[f'cpu_share_{name}'])} |"
                )
    lines += [
        "",
        "Most of the CPU overhead is scoring the holdout with the challenger (tree by tree while it "
        "trains) and with the champion (the paired gates need both), and storing the snapshots, done on "
        "the second core during the single-threaded fit: on an idle machine the wall-clock overhead is "
        "a fraction of it, on a busy one (no idle core) it is most of it. *local*: the job runs in a "
        "child process and reads the snapshot tables from Arrow files; a cold start (a one-off "
        "`evertrain train`) pays a Python start and its imports, which the worker that `evertrain run` "
        "keeps warm between trainings has done already; the cold training starts its worker as the step "
        "begins, so that those overlap the reading and windowing of the data. The cold training's row "
        "against the bare fit in process is the comparison of earlier versions of this benchmark: it "
        "charges evertrain with the Python start and LightGBM's imports that any training script pays. "
        "*inline* and *local warm* run in a process that trains again and again (as `evertrain run` "
        "does): it keeps the champion loaded and its predictions on the last holdout, so the champion "
        "predicts only the holdout rows it has not seen; before each cold training the benchmark drops "
        "them, as a one-off `evertrain train` starts with nothing.",
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
                f"- {m['features']} features, {mode}, {r['iterations']:.0f} iterations: "
                + ", ".join(f"{key} {r['stages'].get(key, 0.0):.3f}" for key in names)
                + f"; holdout scored {', '.join(r['scoring'])}"
                + (
                    ""
                    if r["champion_rows"] is None
                    else f"; the champion predicted {r['champion_rows']:,.0f} of the holdout rows"
                )
            )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"evertrain {evertrain.__version__}, LightGBM {lightgbm.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}; LightGBM threads: {DEFAULT_NUM_THREADS} in both. Load average (1 min, "
        f"`uptime`) {load[0]:.1f} at the start and {load[1]:.1f} at the end"
        + (
            ""
            if steal is None
            else f"; steal (CPU time the hypervisor gave to others, `/proc/stat`) {steal:.1%} over the run"
        )
        + ": on a shared machine the wall times move with the load, the CPU times much less.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="training rows (default 100000)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=9,
        help="pairs per mode (default 9; the 95%% interval of a median needs at least 6)",
    )
    parser.add_argument(
        "--extra-features",
        type=int,
        nargs="+",
        default=list(EXTRA_FEATURES),
        help=f"numeric columns added to the example's 6 features, one run each (default {EXTRA_FEATURES})",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=list(MODES),
        help="executors to measure (default all)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    load_start, (total_start, steal_start) = os.getloadavg()[0], _cpu_times()
    results = [measure(args.rows, args.repeats, extra, args.modes) for extra in args.extra_features]
    total_end, steal_end = _cpu_times()
    steal = (steal_end - steal_start) / (total_end - total_start) if total_end > total_start else None
    text = render(results, (load_start, os.getloadavg()[0]), steal)
    print(text)
    if not args.no_write:
        replace_section(SECTION.removeprefix("## "), text)


if __name__ == "__main__":
    main()
