"""Continuous-training quality: the default policy against simple retraining rules.

    python bench/ct_quality.py [--rows 100000] [--batch 1000] [--seeds 1 2 3] [--delays 0 5]
                               [--streams sea agrawal hyperplane inputs_shift] [--results bench/RESULTS.md]

Each stream is replayed with :func:`evertrain.controller.backtest.backtest` (the real
controller, store, trainer, gates and rollouts on a simulated clock, one controller
cycle per batch) and, on the same batches with the same trainer and training window,
four baselines: never retrain, retrain every 5 and every 20 batches, and retrain when
River's ADWIN fires on the stream of the model's errors. The streams (River 0.26
generators, seeded):

- ``sea``: SEA, abrupt: four concepts (variants 0, 1, 2, 3) of 25,000 rows each, 10%
  label noise (as in the SEA paper).
- ``agrawal``: Agrawal, gradual: functions 0 -> 2 -> 5 -> 8 joined by
  ``ConceptDriftStream`` every 25,000 rows over a width of 5,000 rows.
- ``hyperplane``: rotating hyperplane, incremental: 10 features, 2 drifting by 0.001
  per row with reversal probability 0.1, 5% noise (the usual MOA setting).
- ``inputs_shift``: five inputs that shift (an abrupt mean shift, a gradual one, a
  scale change, a widening skewed column) while the labels keep following one logistic
  rule of them; the right number of promotions is zero.

The spec is evertrain's default for a binary target, with two choices stated here: a
sliding training window of :data:`WINDOW_ROWS` rows for every arm (the default window
keeps every row, which makes retraining on a schedule pointless on a drifting stream
and would flatter the policy), and LightGBM as the trainer on Agrawal, whose concepts
are thresholds on ranges that a linear model cannot draw (logistic regression, the
default, elsewhere: the other concepts are linear).

Targets (from the project's issue): over the drifting streams, the policy's mean
accuracy within 0.5 points of retraining every 5 batches with at most half as many
retrains; on ``inputs_shift`` no promotion at all. Results (medians over the seeds)
replace the ``## Continuous-training quality`` section of ``bench/RESULTS.md``; the
raw numbers go to ``bench/.work/ct_quality.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evertrain.controller.backtest import backtest
from evertrain.controller.backtest_spec import default_spec
from evertrain.controller.baselines import RetrainRule
from evertrain.spec import Spec

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
SECTION = "## Continuous-training quality"
TARGET = "label"
#: Training window of every arm (rows): about ten batches of history.
WINDOW_ROWS = 10_000
#: The issue's targets.
MAX_ACCURACY_GAP = 0.005
MAX_RETRAIN_SHARE = 0.5
REFERENCE = "every_5"
DRIFTING = ("sea", "agrawal", "hyperplane")
#: Seeds of the rows each stream draws; SEA 10% label noise, Hyperplane as in MOA.
SEA_NOISE = 0.1
AGRAWAL_FUNCTIONS = (0, 2, 5, 8)
AGRAWAL_WIDTH = 5_000
HYPERPLANE = {
    "n_features": 10,
    "n_drift_features": 2,
    "mag_change": 0.001,
    "noise_percentage": 0.05,
    "sigma": 0.1,
}
SEGMENTS = 4


# -- streams ---------------------------------------------------------------------------------


def _take(stream: Any, n: int) -> pd.DataFrame:
    rows, labels = [], []
    for x, y in itertools.islice(stream, n):
        rows.append(x)
        labels.append(y)
    frame = pd.DataFrame(rows).rename(columns=lambda c: f"x{c}" if isinstance(c, int) else str(c))
    frame[TARGET] = np.asarray(labels, dtype=np.int64)
    return frame


def sea(n: int, seed: int) -> pd.DataFrame:
    from river.datasets import synth

    size = n // SEGMENTS
    parts = [_take(synth.SEA(variant=v, noise=SEA_NOISE, seed=seed * 10 + v), size) for v in range(SEGMENTS)]
    return pd.concat(parts, ignore_index=True)


def agrawal(n: int, seed: int) -> pd.DataFrame:
    from river.datasets import synth

    size = n // len(AGRAWAL_FUNCTIONS)
    stream: Any = synth.Agrawal(classification_function=AGRAWAL_FUNCTIONS[-1], seed=seed * 10 + 9)
    for k in range(len(AGRAWAL_FUNCTIONS) - 2, -1, -1):
        first = synth.Agrawal(classification_function=AGRAWAL_FUNCTIONS[k], seed=seed * 10 + k)
        stream = synth.ConceptDriftStream(first, stream, position=size, width=AGRAWAL_WIDTH, seed=seed)
    return _take(stream, n)


def hyperplane(n: int, seed: int) -> pd.DataFrame:
    from river.datasets import synth

    return _take(synth.Hyperplane(seed=seed, **HYPERPLANE), n)


def inputs_shift(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / n
    x = rng.normal(size=(n, 5))
    x[:, 0] += np.where(t >= 0.25, 1.0, 0.0)
    x[:, 1] -= np.where(t >= 0.25, 0.8, 0.0)
    x[:, 2] += np.clip((t - 0.5) / 0.25, 0.0, 1.0) * 1.5
    x[:, 3] *= np.where(t >= 0.75, 2.0, 1.0)
    x[:, 4] = rng.exponential(1.0 + np.clip((t - 0.4) / 0.4, 0.0, 1.0), size=n)
    score = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.8 * x[:, 2] + 0.5 * x[:, 3] - 0.7 * x[:, 4]
    p = 1.0 / (1.0 + np.exp(-3.0 * (score - 0.5)))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    frame[TARGET] = (rng.random(n) < p).astype(np.int64)
    return frame


STREAMS: dict[str, Callable[[int, int], pd.DataFrame]] = {
    "sea": sea,
    "agrawal": agrawal,
    "hyperplane": hyperplane,
    "inputs_shift": inputs_shift,
}


def spec_for(name: str, frame: pd.DataFrame) -> Spec:
    data = default_spec(frame, TARGET).model_dump(mode="json", exclude_none=True)
    data["training"]["window"] = {"kind": "sliding", "rows": WINDOW_ROWS}
    if name == "agrawal":
        data["model"]["trainer"] = {"kind": "lightgbm", "seed": 0}
    return Spec.model_validate(data)


# -- the ADWIN baseline ------------------------------------------------------------------------


class AdwinRule(RetrainRule):
    """Retrain when River's ADWIN (default delta 0.002) finds a change in the error rate."""

    name = "adwin"

    def __init__(self) -> None:
        from river import drift

        self._factory = drift.ADWIN
        self._detector = drift.ADWIN()

    def observe(self, batch: int, errors: np.ndarray) -> str | None:
        fired = False
        for e in errors:
            self._detector.update(float(e))
            fired = fired or self._detector.drift_detected
        if fired:
            return f"ADWIN: the error rate changed (now {self._detector.estimation:.3f})"
        return None

    def retrained(self) -> None:
        self._detector = self._factory()


# -- running and reporting -----------------------------------------------------------------------


def run_one(name: str, n: int, batch: int, delay: int, seed: int) -> dict[str, Any]:
    frame = STREAMS[name](n, seed)
    began = time.perf_counter()
    result = backtest(
        frame,
        spec=spec_for(name, frame),
        batch_size=batch,
        label_delay=delay,
        rules=[AdwinRule()],
        what=f"{name} (seed {seed})",
    )
    arms = {"policy": result, **result["baselines"]}
    return {
        "stream": name,
        "delay": delay,
        "seed": seed,
        "seconds": time.perf_counter() - began,
        "arms": {
            arm: {
                "accuracy": r["mean_accuracy"],
                "retrains": r["n_retrains"],
                "train_seconds": r["train_seconds"],
                "promotions": len(r["promotions"]) if arm == "policy" else r["n_retrains"],
            }
            for arm, r in arms.items()
        },
        "retrains": [
            {k: r.get(k) for k in ("batch", "reason", "version", "gates", "train_rows")}
            for r in result["retrains"]
        ],
        "promotions": result["promotions"],
        "rollbacks": result["rollbacks"],
        "drift_batches": [b["index"] for b in result["batches"] if b["drifted"]],
    }


def median_of(runs: list[dict[str, Any]], arm: str, key: str) -> float:
    return float(statistics.median(r["arms"][arm][key] for r in runs))


def machine() -> str:
    versions = ", ".join(
        f"{p} {metadata.version(p)}"
        for p in ("evertrain", "river", "scikit-learn", "lightgbm", "numpy", "pandas")
    )
    return (
        f"{platform.machine()}, {os.cpu_count()} cores visible, Python {platform.python_version()} "
        f"({platform.system()}); {versions}"
    )


def judge(runs: list[dict[str, Any]], delays: list[int], streams: list[str]) -> list[str]:
    """One line per target and delay: the figures and whether the target is met."""
    lines = []
    drifting = [s for s in streams if s in DRIFTING]
    for delay in delays:
        if drifting:
            at = [r for r in runs if r["delay"] == delay]
            ours = statistics.mean(
                median_of([r for r in at if r["stream"] == s], "policy", "accuracy") for s in drifting
            )
            ref = statistics.mean(
                median_of([r for r in at if r["stream"] == s], REFERENCE, "accuracy") for s in drifting
            )
            n_ours = sum(
                median_of([r for r in at if r["stream"] == s], "policy", "retrains") for s in drifting
            )
            n_ref = sum(
                median_of([r for r in at if r["stream"] == s], REFERENCE, "retrains") for s in drifting
            )
            close = ours >= ref - MAX_ACCURACY_GAP
            few = n_ours <= MAX_RETRAIN_SHARE * n_ref
            lines.append(
                f"- label delay {delay}: mean accuracy over {', '.join(drifting)}: policy {ours:.2%} vs "
                f"every 5 batches {ref:.2%} ({(ours - ref) * 100:+.2f} points; target >= -0.50): "
                f"**{'met' if close else 'missed'}**; retrains {n_ours:g} vs {n_ref:g} "
                f"({n_ours / n_ref:.0%}; target <= 50%): **{'met' if few else 'missed'}**"
            )
        if "inputs_shift" in streams:
            shifted = [r for r in runs if r["delay"] == delay and r["stream"] == "inputs_shift"]
            promoted = sum(len(r["promotions"]) for r in shifted)
            lines.append(
                f"- label delay {delay}: promotions on inputs_shift, all {len(shifted)} seeds: {promoted} "
                f"(target 0): **{'met' if promoted == 0 else 'missed'}**"
            )
    return lines


def stream_table(runs: list[dict[str, Any]], stream: str, delays: list[int]) -> list[str]:
    arms = list(runs[0]["arms"])
    lines = [
        f"**{stream}**",
        "",
        "| label delay | " + " | ".join(arms) + " |",
        "|---|" + "---:|" * len(arms),
    ]
    for delay in delays:
        at = [r for r in runs if r["stream"] == stream and r["delay"] == delay]
        if not at:
            continue
        cells = [
            f"{median_of(at, a, 'accuracy'):.2%} / {median_of(at, a, 'retrains'):g}"
            + (f" / {median_of(at, a, 'promotions'):g}p" if a == "policy" else "")
            for a in arms
        ]
        lines.append(f"| {delay} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the others as they are."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        following = text.find("\n## ", start + len(SECTION))
        rest = "" if following < 0 else text[following + 1 :]
        text = text[:start] + body + ("\n" + rest if rest else "")
    path.write_text(text)


def report(runs: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        SECTION,
        "",
        f"`python bench/ct_quality.py` ({args.rows:,} rows per stream in batches of {args.batch:,}; "
        f"seeds {', '.join(map(str, args.seeds))}; medians over the seeds; {seconds / 60:.0f} min in all). "
        "Each cell: mean accuracy over the replayed batches / retrains (policy: / promotions). "
        f"Every arm trains the same model on the same sliding window of {WINDOW_ROWS:,} rows; the policy "
        "is the default spec (triggers, cooldown 6 h, 4 retrains a day, a superiority gate, canary 10% "
        "then 50%, one controller cycle = one batch = 1 h); baselines promote without gates or canary. "
        "Five warm batches train the first model of every arm.",
        "",
        f"Machine: {machine()}.",
        "",
        "Targets:",
        "",
        *judge(runs, args.delays, args.streams),
        "",
    ]
    for stream in args.streams:
        lines += stream_table(runs, stream, args.delays)
    lines += seconds_table(runs, args.streams, args.delays)
    lines += NOTES
    return "\n".join(lines) + "\n"


def seconds_table(runs: list[dict[str, Any]], streams: list[str], delays: list[int]) -> list[str]:
    """Median seconds spent fitting models per arm (first model included), per stream and delay."""
    arms = list(runs[0]["arms"])
    lines = [
        "Seconds spent training (median; the first model included):",
        "",
        "| stream | label delay | " + " | ".join(arms) + " |",
        "|---|---:|" + "---:|" * len(arms),
    ]
    for stream in streams:
        for delay in delays:
            at = [r for r in runs if r["stream"] == stream and r["delay"] == delay]
            if at:
                cells = [f"{median_of(at, a, 'train_seconds'):.1f}" for a in arms]
                lines.append(f"| {stream} | {delay} | " + " | ".join(cells) + " |")
    return [*lines, ""]


NOTES = [
    "How to read it, and what the defaults owe to it:",
    "",
    "- The policy reacts to a concept change once the labels show it: a retrain on the rows "
    "of the monitored window where the decay showed (not on the whole window, which right after "
    "a change is mostly the old concept), gated by a superiority test against the champion on "
    "the newest rows, then a canary of about three batches. On the abrupt and gradual streams "
    "this beats retraining every 5 batches with a quarter of the retrains; on the incremental "
    "Hyperplane it is level with it.",
    "- A policy retrain learns from few rows (the newest labelled batch: 679 rows once holdout "
    "and validation are set aside). During each of Agrawal's gradual transitions the first "
    "retrain comes early and learns a half-changed concept; the gate rejects it (3 of the 6 "
    "retrains, every seed and delay), and the next one, a cooldown later, passes. No policy "
    "promotion was rolled back on any stream.",
    "- On `inputs_shift` monitoring flags the moved columns (see `drift_batches` in the raw "
    "JSON), but the champion's accuracy on the labelled rows since the shift is no lower, so "
    "no retrain is made; retraining anyway (every 5) gains nothing, which is the point.",
    "- ADWIN fires on the changes, but its retrains learn from the same 10,000-row window, "
    "which soon after a change is mostly the old concept; that, more than the detector, is "
    "probably what holds it back here.",
    "- Baselines promote every retrain at once, with no gate and no canary; the policy pays "
    "the canary's batches on every promotion.",
    "- Defaults changed for this (see docs/architecture.md): a drift is confirmed by its labels "
    "before it retrains; a retrain for decayed performance learns from where the decay showed; "
    "a superiority gate when a project names none; cooldown 6 h (was 1 day) and 4 retrains a "
    "day (was 2); a canary step lasts one cycle (1 h, was 10 min, which with the "
    "undecided-step limit of 6 durations rolled back every canary that did not get 200 rows "
    "in an hour).",
    "",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="'-' to print only")
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)
    raw = WORK / "ct_quality.json"
    began = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for seed, stream, delay in itertools.product(args.seeds, args.streams, args.delays):
        run = run_one(stream, args.rows, args.batch, delay, seed)
        runs.append(run)
        arms = "  ".join(f"{a} {v['accuracy']:.4f}/{v['retrains']}" for a, v in run["arms"].items())
        print(f"seed {seed} {stream:<12} delay {delay}: {arms}  ({run['seconds']:.0f} s)", flush=True)
        raw.write_text(json.dumps(runs, indent=1, default=str))
    body = report(runs, args, time.perf_counter() - began)
    sys.stdout.write("\n" + body)
    if str(args.results) != "-":
        write_section(args.results, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
