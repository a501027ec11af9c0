"""Small example streams, generated deterministically from a seed (nothing is downloaded).

``make_churn_stream`` is a customer-churn table with a known concept change: from row
``change_at`` on, the way churn depends on the features flips in some regions and stays
in the others. A model trained before the change goes stale in the changed regions and
stays right in the others, which is what retraining, gates and slices are tested on.
``make_price_stream`` is a regression table for the same purpose.

``EXAMPLES`` are the projects ``evertrain init DIR --example NAME`` writes.

>>> rows = make_churn_stream(1000, seed=3, change_at=500)
>>> rows.shape, sorted(rows["region"].unique())
((1000, 9), ['east', 'north', 'south', 'west'])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evertrain.data.tickets import make_support_tickets
from evertrain.data.timeline import LABEL_DELAY_SECONDS, START_EPOCH, STEP_SECONDS

REGIONS = ("north", "south", "east", "west")
PLANS = ("basic", "plus", "pro")
#: How sharply churn follows its score; 3 gives a Bayes accuracy near 0.85.
_SHARPNESS = 3.0


def _times(
    n_rows: int, rng: np.random.Generator, start: float, label_delay: float
) -> tuple[np.ndarray, np.ndarray]:
    ts = start + STEP_SECONDS * np.arange(n_rows, dtype=float)
    # Labels come back after a delay that varies around its typical value.
    label_ts = ts + label_delay * rng.uniform(0.5, 1.5, size=n_rows)
    return ts, label_ts


def make_churn_stream(
    n_rows: int,
    *,
    seed: int = 0,
    change_at: int | None = None,
    changed_regions: tuple[str, ...] = ("north", "south", "east"),
    start: float = START_EPOCH,
    label_delay: float = LABEL_DELAY_SECONDS,
) -> pd.DataFrame:
    """A churn table; from row ``change_at`` on, the concept flips in ``changed_regions``."""
    rng = np.random.default_rng(seed)
    ts, label_ts = _times(n_rows, rng, start, label_delay)
    region = rng.choice(REGIONS, size=n_rows)
    plan = rng.choice(PLANS, size=n_rows, p=[0.5, 0.3, 0.2])
    tenure = rng.gamma(2.0, 12.0, size=n_rows).round(1)
    spend = rng.normal(60.0, 20.0, size=n_rows).clip(5.0, None).round(2)
    calls = rng.poisson(2.0, size=n_rows)
    visits = rng.poisson(8.0, size=n_rows)
    plan_effect = np.select([plan == "basic", plan == "plus"], [0.4, 0.0], -0.4)
    score = (
        0.9 * (calls - 2.0) / 1.4
        - 0.7 * (tenure - 24.0) / 17.0
        + 0.5 * (spend - 60.0) / 20.0
        - 0.3 * (visits - 8.0) / 2.8
        + plan_effect
    )
    if change_at is not None:
        flipped = (np.arange(n_rows) >= change_at) & np.isin(region, changed_regions)
        score = np.where(flipped, -score, score)
    churned = (rng.uniform(size=n_rows) < 1.0 / (1.0 + np.exp(-_SHARPNESS * score))).astype(int)
    return pd.DataFrame(
        {
            "ts": ts,
            "label_ts": label_ts,
            "region": region,
            "plan": plan,
            "tenure_months": tenure,
            "monthly_spend": spend,
            "support_calls": calls,
            "visits": visits,
            "churned": churned,
        }
    )


def make_price_stream(
    n_rows: int, *, seed: int = 0, change_at: int | None = None, start: float = START_EPOCH
) -> pd.DataFrame:
    """A regression table: price from size, rooms, age and district; premiums flip at ``change_at``."""
    rng = np.random.default_rng(seed)
    ts, label_ts = _times(n_rows, rng, start, LABEL_DELAY_SECONDS)
    district = rng.choice(REGIONS, size=n_rows)
    size = rng.normal(80.0, 25.0, size=n_rows).clip(20.0, None).round(1)
    rooms = np.maximum(1, (size / 25.0 + rng.normal(0.0, 0.7, size=n_rows)).round()).astype(int)
    age = rng.uniform(0.0, 60.0, size=n_rows).round(1)
    premium = np.select(
        [district == "north", district == "south", district == "east"], [40.0, 0.0, 20.0], 10.0
    )
    if change_at is not None:
        premium = np.where(np.arange(n_rows) >= change_at, -premium, premium)
    price = 50.0 + 2.5 * size + 8.0 * rooms - 0.9 * age + premium + rng.normal(0.0, 15.0, size=n_rows)
    return pd.DataFrame(
        {
            "ts": ts,
            "label_ts": label_ts,
            "district": district,
            "size_m2": size,
            "rooms": rooms,
            "age_years": age,
            "price": price.round(2),
        }
    )


@dataclass(frozen=True)
class Example:
    """A project ``evertrain init`` can write: its spec, its history and the traffic to serve.

    ``make_history`` gives the labelled rows from before serving (the warehouse the first
    version trains on); ``make_live`` the rows a client sends to the server afterwards,
    features and label, with a concept change partway (``traffic.py`` sends them).
    """

    description: str
    model: str
    target: str
    data_file: str
    make_history: Callable[[], pd.DataFrame]
    live_file: str
    make_live: Callable[[], pd.DataFrame]
    spec: str
    #: Folder (in the project) the spec reads its base language model from; ``evertrain init``
    #: builds a tiny one there (examples that fine-tune a language model only).
    base_model: str | None = None


# The loop's timings in both examples are short, so that serve -> predict -> feedback ->
# run -> retrain -> canary -> promote shows in minutes; production values are hours.
_LOOP_TIMINGS = """\
monitoring:
  window_rows: 500            # realized performance over the newest 500 labelled rows
triggers:
  # a decay retrains on the training window (the newest labelled rows, most of them served
  # after the change), which keeps enough rows of every region for the slice gate to judge
  performance: {{drop: 0.05, min_labels: 200, learn_from: window}}
policy:
  cycle_interval: 10s         # production: 1h (evertrain run --interval overrides it)
  cooldown: 15s               # production: hours
rollout:
  steps:
    - {{share: 0.5, duration: 10s, min_samples: 100}}   # production: an hour or more
  analysis: {{min_labels: 50, quality_margin: {margin}}}
  watch_after_promotion: 1m
"""

_CHURN_SPEC = """\
# A churn model that learns from its own served traffic: the prediction log joined with
# the labels posted to the feedback route, after data/churn.csv (the labelled history
# from before serving started). Labels are the churned column (0 or 1).
model:
  name: churn
  task: binary
  target: churned
  trainer:
    kind: lightgbm
    params: {num_leaves: 15, learning_rate: 0.1, num_boost_round: 300}
    seed: 7
    early_stopping_rounds: 30
data:
  source:
    kind: log
    history: {kind: csv, path: data/churn.csv}
  time_column: ts
  label_time_column: label_ts
training:
  window: {kind: sliding, rows: 3000}   # the newest 3000 labelled rows
  holdout: {fraction: 0.25}
  executor: local
  budget: {daily_train_seconds: 1h, max_concurrent: 1}
gates:
  - {kind: threshold, metric: roc_auc, min: 0.6}
  - {kind: non_inferiority, metric: accuracy, margin: 0.01}
  - {kind: slices, column: region, metric: accuracy, margin: 0.03}
  - {kind: size, max_mb: 50}
  - {kind: latency, max_ms_per_row: 5}
""" + _LOOP_TIMINGS.format(margin=0.02)

_TICKETS_SPEC = """\
# Support tickets -> intent, by LoRA fine-tuning of a small language model (the llm extra).
# base-model/ holds a tiny GPT-2 that `evertrain init` built from ticket text; point
# base_model at any save_pretrained folder or fsspec URL (s3://...) of a larger one.
# New product names and a new intent (cancel) appear in the live traffic.
model:
  name: support-tickets
  task: multiclass
  target: intent
  features: [text]
  trainer:
    kind: lora
    seed: 7
    warm_start: true          # continued fine-tuning from the champion's adapter
    time_limit: 30m
    lora:
      base_model: base-model
      r: 8
      alpha: 16
      dropout: 0.05
      epochs: 2
      batch_size: 16
      grad_accum_steps: 1
      learning_rate: 0.01
      max_length: 48
      precision: fp32         # bf16 on a recent CPU or GPU; fp16 on a GPU
      patience: 3             # valid-loss checks without improvement before stopping
data:
  source:
    kind: log
    history: {kind: csv, path: data/tickets.csv}
  time_column: ts
  label_time_column: label_ts
training:
  window: {kind: sliding, rows: 1500}
  holdout: {fraction: 0.25}
  executor: local
  budget: {daily_train_seconds: 1h, max_concurrent: 1}
gates:
  - {kind: threshold, metric: accuracy, min: 0.7}
  - {kind: non_inferiority, metric: f1, margin: 0.02}
  - {kind: size, max_mb: 20}
""" + _LOOP_TIMINGS.format(margin=0.02)

_PRICES_SPEC = """\
# A price model (scikit-learn) that learns from its served traffic (the prediction log
# joined with the sale prices posted as feedback) after data/prices.csv, the sales from
# before serving started; the recent sales weigh more.
model:
  name: prices
  task: regression
  target: price
  trainer:
    kind: sklearn
    estimator: sklearn.ensemble.HistGradientBoostingRegressor
    params: {max_iter: 200}
    seed: 7
  # skops rebuilds only types it trusts; scikit-learn's own tree predictor is one to allow.
  trusted_types: [sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor]
data:
  source:
    kind: log
    history: {kind: csv, path: data/prices.csv}
  time_column: ts
  label_time_column: label_ts
training:
  window: {kind: weighted, rows: 5000, half_life: 1d}
  holdout: {fraction: 0.2}
  executor: local
gates:
  - {kind: threshold, metric: rmse, max: 40}
  - {kind: non_inferiority, metric: mae, margin: 1.0}
""" + _LOOP_TIMINGS.format(margin=5.0)

#: Rows of the bundled history tables: small enough to train in seconds, big enough for gates.
EXAMPLE_ROWS = 4000
#: Rows a client sends (``traffic.py``); the concept changes after ``LIVE_CHANGE_AT`` of them.
LIVE_ROWS = 12000
LIVE_CHANGE_AT = 2000
EXAMPLE_SEED = 20260101


def _live(frame: pd.DataFrame) -> pd.DataFrame:
    """What a client has: features and the label that comes back later; no times (it is now)."""
    return frame.drop(columns=["ts", "label_ts"])


EXAMPLES: dict[str, Example] = {
    "churn": Example(
        "binary churn model (LightGBM) learning from its served traffic, whose concept changes "
        "in three of four regions",
        "churn",
        "churned",
        "data/churn.csv",
        lambda: make_churn_stream(EXAMPLE_ROWS, seed=EXAMPLE_SEED),
        "data/churn-live.csv",
        lambda: _live(make_churn_stream(LIVE_ROWS, seed=EXAMPLE_SEED + 1, change_at=LIVE_CHANGE_AT)),
        _CHURN_SPEC,
    ),
    "prices": Example(
        "regression price model (scikit-learn) learning from its served traffic, recent sales weighing more",
        "prices",
        "price",
        "data/prices.csv",
        lambda: make_price_stream(EXAMPLE_ROWS, seed=EXAMPLE_SEED),
        "data/prices-live.csv",
        lambda: _live(make_price_stream(LIVE_ROWS, seed=EXAMPLE_SEED + 1, change_at=LIVE_CHANGE_AT)),
        _PRICES_SPEC,
    ),
    "support-tickets": Example(
        "support tickets -> intent by LoRA fine-tuning of a small language model (llm extra); new product "
        "names and a new intent appear in the live traffic",
        "support-tickets",
        "intent",
        "data/tickets.csv",
        lambda: make_support_tickets(1000, seed=EXAMPLE_SEED),
        "data/tickets-live.csv",
        lambda: _live(make_support_tickets(4000, seed=EXAMPLE_SEED + 1, change_at=600)).drop(
            columns=["channel"]
        ),
        _TICKETS_SPEC,
        base_model="base-model",
    ),
}

_TRAFFIC = '''\
"""Plays production for this project: sends LIVE to the model server, then posts the labels.

Rows go in batches to POST /v1/models/MODEL:predict with request ids; the true labels of a
batch go to POST /v1/models/MODEL:feedback right after (in real life they come later).
Only HTTP is used, as by any client of the server.

    python traffic.py [--url http://127.0.0.1:8080] [--batch 100] [--pause 0.5] [--start ROW] [--rows N]
"""

import argparse
import csv
import json
import time
import urllib.error
import urllib.request
import uuid

MODEL, TARGET, LIVE = @MODEL@, @TARGET@, @LIVE@


def post(url, body):
    """POST JSON; a refused request is printed with the server's reason, which is returned."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        print(f"{url}: HTTP {exc.code}: {text[:300]}", flush=True)
        try:
            return json.loads(text)
        except ValueError:
            return None


def wait_ready(url, seconds=120):
    """Wait for the server to answer /readyz (it may still be starting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"no model server ready at {url} after {seconds}s")
            time.sleep(0.5)


def value(text):
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--batch", type=int, default=100, help="rows per predict request")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between batches")
    parser.add_argument("--start", type=int, default=0, help="first row of the file to send")
    parser.add_argument("--rows", type=int, default=None, help="rows to send (default: all)")
    args = parser.parse_args()
    with open(LIVE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[args.start : None if args.rows is None else args.start + args.rows]
    wait_ready(args.url)
    run = uuid.uuid4().hex[:8]
    right = total = 0
    for start in range(0, len(rows), args.batch):
        batch = rows[start : start + args.batch]
        instances = [{k: value(v) for k, v in row.items() if k != TARGET} for row in batch]
        ids = [f"{run}-{args.start + start + i}" for i in range(len(batch))]
        answer = post(f"{args.url}/v1/models/{MODEL}:predict", {"instances": instances, "request_ids": ids})
        while isinstance(answer, dict) and str(answer.get("field", "")).startswith("instances["):
            # The server refused one row (a value far outside what it was trained on): drop it.
            index = int(answer["field"].split("[")[1].split("]")[0])
            del batch[index], instances[index], ids[index]
            answer = post(
                f"{args.url}/v1/models/{MODEL}:predict", {"instances": instances, "request_ids": ids}
            )
        if answer is None or "predictions" not in answer:
            continue
        labels = [value(row[TARGET]) for row in batch]
        feedback = [{"request_id": i, "label": y} for i, y in zip(ids, labels)]
        post(f"{args.url}/v1/models/{MODEL}:feedback", {"labels": feedback})
        for predicted, label in zip(answer["predictions"], labels):
            if isinstance(label, str):
                right += predicted == label
            else:
                right += abs(float(predicted) - float(label)) < 0.5
            total += 1
        if total % 1000 < len(batch):
            print(
                f"sent {args.start + total} rows, answered by v{answer['model_version']}; "
                f"right so far: {right / total:.1%}",
                flush=True,
            )
        time.sleep(args.pause)


if __name__ == "__main__":
    main()
'''


def write_project(folder: Path | str, name: str = "churn") -> Path:
    """Write example ``name`` into ``folder``: ``evertrain.yaml``, the history it trains on
    first, the live rows a client sends and ``traffic.py``, the client that sends them."""
    example = EXAMPLES[name]
    root = Path(folder)
    for file, make in ((example.data_file, example.make_history), (example.live_file, example.make_live)):
        path = root / file
        path.parent.mkdir(parents=True, exist_ok=True)
        make().to_csv(path, index=False)
    (root / "evertrain.yaml").write_text(example.spec, encoding="utf-8")
    script = (
        _TRAFFIC.replace("@MODEL@", repr(example.model))
        .replace("@TARGET@", repr(example.target))
        .replace("@LIVE@", repr(example.live_file))
    )
    (root / "traffic.py").write_text(script, encoding="utf-8")
    return root
