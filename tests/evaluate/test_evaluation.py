"""evaluate_version on versions registered by hand: fresh holdout, champion choice, report shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from evertrain.data.examples import make_churn_stream
from evertrain.evaluate.evaluation import evaluate_version
from evertrain.exceptions import UsageError
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.train.trainers import model_bytes

NUMERIC = ["tenure_months", "monthly_spend", "support_calls", "visits"]
REPORT_KEYS = {
    "model",
    "version",
    "champion_version",
    "passed",
    "reason",
    "holdout",
    "metrics",
    "golden",
    "latency_ms_per_row",
    "size_bytes",
    "checks",
    "seed",
    "run_id",
    "evaluated_at",
    "timings",
}


@pytest.fixture
def spec(project: Path, clock: Any) -> Spec:
    rows = make_churn_stream(2000, seed=21)
    rows.to_csv(project / "churn.csv", index=False)
    clock.now = float(rows["label_ts"].max()) + 1.0
    return Spec.model_validate(
        {
            "model": {"name": "churn", "target": "churned", "features": NUMERIC},
            "data": {
                "source": {"kind": "csv", "path": "churn.csv"},
                "time_column": "ts",
                "label_time_column": "label_ts",
            },
            "gates": [
                {"kind": "non_inferiority", "metric": "accuracy", "margin": 0.02},
                {"kind": "threshold", "metric": "roc_auc", "min": 0.55},
            ],
        }
    )


def _register(store: Store, c: float) -> int:
    rows = make_churn_stream(2000, seed=22)
    model = LogisticRegression(C=c).fit(rows[NUMERIC], rows["churned"])
    framework, blob = model_bytes(model)
    return store.registry.register(
        "churn", store.artifacts.put(blob), framework=framework, actor="tester"
    ).version


def test_a_version_without_a_holdout_is_judged_on_a_fresh_one(
    store: Store, project: Path, spec: Spec
) -> None:
    first, second = _register(store, 1.0), _register(store, 0.001)
    store.registry.promote("churn", first, actor="tester")
    report = evaluate_version(store, spec, "churn", second, project=project)
    assert set(report.to_dict()) == REPORT_KEYS
    # the newest fifth of 2,000 rows, raised towards holdout.min_rows up to a third
    assert report.champion_version == first and report.holdout["n_rows"] == 666
    [stored] = store.lineage.evaluations("churn", second)
    assert stored["snapshot"] == report.holdout["snapshot"] and stored["report"]["passed"] == report.passed
    assert store.lineage.of_snapshot(report.holdout["snapshot"])["versions"] == [
        {"model": "churn", "version": second, "role": "eval"}
    ]
    with pytest.raises(UsageError, match="no holdout snapshot"):
        evaluate_version(store, spec, "churn", second)


def test_champion_choice_and_not_recording(store: Store, project: Path, spec: Spec) -> None:
    version = _register(store, 1.0)
    alone = evaluate_version(store, spec, "churn", version, project=project, record=False)
    assert alone.passed and alone.champion_version is None and "no champion" in alone.checks[0].reason
    assert store.lineage.evaluations("churn", version) == []
    other = _register(store, 0.5)
    against = evaluate_version(store, spec, "churn", other, project=project, champion=version, record=False)
    assert against.champion_version == version and against.metrics["champion"] is not None
    none = evaluate_version(store, spec.model_copy(update={"gates": []}), "churn", other, project=project)
    assert none.passed and none.checks == [] and none.reason.startswith("no gates configured")
