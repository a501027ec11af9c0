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

#: 2026-01-01T00:00:00Z: a fixed start so generated tables are identical everywhere.
START_EPOCH = 1_767_225_600.0
#: One row per minute of event time.
STEP_SECONDS = 60.0
#: Labels (did the customer churn) arrive about a day after the event.
LABEL_DELAY_SECONDS = 86_400.0
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
    """A project ``evertrain init`` can write: its spec and how to make its data."""

    description: str
    data_file: str
    make_data: Callable[[], pd.DataFrame]
    spec: str


_CHURN_SPEC = """\
# A churn model retrained on a sliding window of labelled rows (labels arrive ~1 day late).
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
  source: {kind: csv, path: data/churn.csv}
  time_column: ts
  label_time_column: label_ts
training:
  window: {kind: sliding, rows: 4000}
  holdout: {fraction: 0.25}
  executor: local
  budget: {daily_train_seconds: 1h, max_concurrent: 1}
gates:
  - {kind: threshold, metric: roc_auc, min: 0.6}
  - {kind: non_inferiority, metric: accuracy, margin: 0.01}
  - {kind: slices, column: region, metric: accuracy, margin: 0.03}
  - {kind: size, max_mb: 50}
  - {kind: latency, max_ms_per_row: 5}
"""

_PRICES_SPEC = """\
# A price model (scikit-learn) retrained on the last 5000 sales, the recent ones weighing more.
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
  source: {kind: csv, path: data/prices.csv}
  time_column: ts
  label_time_column: label_ts
training:
  window: {kind: weighted, rows: 5000, half_life: 1d}
  holdout: {fraction: 0.2}
  executor: local
gates:
  - {kind: threshold, metric: rmse, max: 40}
  - {kind: non_inferiority, metric: mae, margin: 1.0}
"""

#: Rows of the bundled example tables: small enough to train in seconds, big enough for gates.
EXAMPLE_ROWS = 8000
EXAMPLE_SEED = 20260101

EXAMPLES: dict[str, Example] = {
    "churn": Example(
        "binary churn model (LightGBM) on a stream whose concept changes halfway in three of four regions",
        "data/churn.csv",
        lambda: make_churn_stream(EXAMPLE_ROWS, seed=EXAMPLE_SEED, change_at=EXAMPLE_ROWS // 2),
        _CHURN_SPEC,
    ),
    "prices": Example(
        "regression price model (scikit-learn) with a recency-weighted window",
        "data/prices.csv",
        lambda: make_price_stream(EXAMPLE_ROWS, seed=EXAMPLE_SEED, change_at=EXAMPLE_ROWS // 2),
        _PRICES_SPEC,
    ),
}


def write_project(folder: Path | str, name: str = "churn") -> Path:
    """Write example ``name`` into ``folder``: its ``evertrain.yaml`` and its generated data."""
    example = EXAMPLES[name]
    root = Path(folder)
    data_path = root / example.data_file
    data_path.parent.mkdir(parents=True, exist_ok=True)
    example.make_data().to_csv(data_path, index=False)
    (root / "evertrain.yaml").write_text(example.spec, encoding="utf-8")
    return root
