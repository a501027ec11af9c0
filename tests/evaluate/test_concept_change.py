"""The gates on a stream with a known concept change, end to end through train_model.

From row 4000 on, churn depends on the features the other way round in three regions
(north, south, east); in the west nothing changes. A champion trained before the change
is stale in those three regions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evertrain.data.examples import make_churn_stream
from evertrain.spec import Spec, TrainerSpec
from evertrain.store import Store
from evertrain.train.pipeline import TrainResult, train_model

ROWS, CHANGE_AT = 8000, 4000
DAY = 86_400.0

SABOTEUR = '''
import lightgbm
import numpy as np


def _fit(X, y, seed):
    return lightgbm.LGBMClassifier(n_estimators=80, num_leaves=15, random_state=seed, verbose=-1).fit(X, y)


def shuffled(train, valid, context):
    """A broken challenger: trained on labels shuffled out of their rows."""
    X, y = context.xy(train, categorical_as_category=True)
    return _fit(X, np.random.default_rng(context.seed).permutation(y.to_numpy()), context.seed)


def flip_west(train, valid, context):
    """A challenger that learned the west region backwards and everything else right."""
    X, y = context.xy(train, categorical_as_category=True)
    west = (train["region"] == "west").to_numpy()
    return _fit(X, np.where(west, 1 - y.to_numpy(), y.to_numpy()), context.seed)
'''


@pytest.fixture
def stream(project: Path) -> Any:
    rows = make_churn_stream(ROWS, seed=5, change_at=CHANGE_AT, changed_regions=("north", "south", "east"))
    rows.to_csv(project / "churn.csv", index=False)
    (project / "saboteur.py").write_text(SABOTEUR)
    return rows


def _spec() -> Spec:
    return Spec.model_validate(
        {
            "model": {
                "name": "churn",
                "target": "churned",
                "trainer": {
                    "kind": "lightgbm",
                    "seed": 7,
                    "early_stopping_rounds": 20,
                    "params": {"num_leaves": 15, "learning_rate": 0.1, "num_boost_round": 200},
                },
            },
            "data": {
                "source": {"kind": "csv", "path": "churn.csv"},
                "time_column": "ts",
                "label_time_column": "label_ts",
            },
            "training": {
                "window": {"kind": "sliding", "rows": 3000},
                "holdout": {"fraction": 0.25},
                "executor": "inline",
            },
            "gates": [
                {"kind": "threshold", "metric": "roc_auc", "min": 0.6},
                {"kind": "non_inferiority", "metric": "accuracy", "margin": 0.01},
                {"kind": "superiority", "metric": "roc_auc", "margin": 0.0},
                {"kind": "slices", "column": "region", "metric": "accuracy", "margin": 0.02},
            ],
        }
    )


def _with_callable(spec: Spec, path: str) -> Spec:
    trainer = TrainerSpec(kind="callable", callable=path, seed=7)
    return spec.model_copy(update={"model": spec.model.model_copy(update={"trainer": trainer})})


def _checks(result: TrainResult) -> dict[str, dict[str, Any]]:
    assert result.report is not None
    return {c["kind"]: c for c in result.report["checks"]}


def test_retrained_beats_stale_champion_and_broken_challengers_fail(
    store: Store, project: Path, stream: Any, clock: Any
) -> None:
    spec = _spec()
    # Before the change: the champion.
    clock.now = float(stream["ts"].iloc[CHANGE_AT - 1])
    first = train_model(store, spec, project, reason="initial")
    assert first.outcome == "accepted" and first.report["champion_version"] is None
    store.registry.promote("churn", first.version, actor="tester")

    # Long after the change: retrained on the post-change window, it beats the champion.
    clock.now = float(stream["ts"].iloc[-1]) + 2 * DAY
    retrained = train_model(store, spec, project, trigger="drift", reason="concept change")
    checks = _checks(retrained)
    assert retrained.outcome == "accepted", retrained.report["reason"]
    assert retrained.report["champion_version"] == first.version
    assert checks["superiority"]["evidence"]["improvement_interval"][0] > 0
    window = store.registry.get_version("churn", retrained.version).params["window"]
    assert window["train_time_range"][0] >= float(stream["ts"].iloc[CHANGE_AT])

    # Worse only in the west: the slice gate fails, every other gate passes.
    clock.now += 60.0  # later, with no new labels: the same window, so the same holdout rows
    west = train_model(store, _with_callable(spec, "saboteur:flip_west"), project, reason="west broken")
    assert west.snapshots["holdout"] == retrained.snapshots["holdout"]  # judged on the same rows
    checks = _checks(west)
    assert west.outcome == "rejected"
    assert not checks["slices"]["passed"]
    assert [s["slice"] for s in checks["slices"]["evidence"]["slices"] if s["regressed"]] == ["west"]
    assert all(c["passed"] for kind, c in checks.items() if kind != "slices")

    # Against the retrained champion, shuffled labels fail non-inferiority beyond doubt.
    store.registry.promote("churn", retrained.version, actor="tester")
    clock.now += 60.0
    shuffled = train_model(
        store, _with_callable(spec, "saboteur:shuffled"), project, reason="shuffled labels"
    )
    ni = _checks(shuffled)["non_inferiority"]
    assert shuffled.outcome == "rejected" and not ni["passed"]
    low, high = ni["evidence"]["interval"]
    assert low <= ni["evidence"]["difference"] <= high < -ni["evidence"]["margin"]

    # Every verdict is in lineage, linked to the holdout snapshot, and in the audit log.
    gates = store.lineage.of_version("churn", shuffled.version)["gates"]
    assert (
        len(gates) == 1 and gates[0]["snapshot"] == shuffled.snapshots["holdout"] and not gates[0]["passed"]
    )
    audited = [e for e in store.audit.entries(limit=100) if e.action == "gate"]
    assert len(audited) == 4
    runs = store.runs.list(model="churn", kind="train")
    assert [r.result["outcome"] for r in runs] == ["accepted", "accepted", "rejected", "rejected"]
