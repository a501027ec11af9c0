"""evaluate_version on versions registered by hand: fresh holdout, champion choice, report shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from evertrain.data.examples import make_churn_stream
from evertrain.data.snapshots import take_snapshot
from evertrain.evaluate.evaluation import ChecksAhead, check_ahead, evaluate_version
from evertrain.evaluate.scoring import load_model, score
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


def _with_holdout(store: Store, holdout: Any, c: float) -> int:
    """A version registered with ``holdout`` as its holdout snapshot."""
    rows = make_churn_stream(2000, seed=22)
    model = LogisticRegression(C=c).fit(rows[NUMERIC], rows["churned"])
    framework, blob = model_bytes(model)
    snap = take_snapshot(store, holdout)
    digest = store.artifacts.put(blob)
    snapshots = [(snap.id, "holdout")]
    return store.registry.register(
        "churn", digest, framework=framework, actor="tester", snapshots=snapshots
    ).version


def test_checks_made_ahead_are_taken_only_when_made_on_what_is_judged(store: Store, spec: Spec) -> None:
    holdout = make_churn_stream(600, seed=23)
    first, second = _with_holdout(store, holdout, 1.0), _with_holdout(store, holdout, 0.001)
    store.registry.promote("churn", first, actor="tester")
    models = {v: load_model(store, store.registry.get_version("churn", v), []) for v in (first, second)}
    scored = {v: score(model, holdout, NUMERIC, "binary", "churned") for v, model in models.items()}

    def judge(ahead: ChecksAhead | None) -> Any:
        return evaluate_version(
            store,
            spec,
            "churn",
            second,
            record=False,
            challenger_scores=scored[second],
            champion_scores={first: scored[first]},
            holdout_rows=holdout,
            ahead=ahead,
        )

    def made(champion: int | None) -> ChecksAhead:
        return check_ahead(spec, scored[second], {first: scored[first]}, champion, holdout, None)

    plain = judge(None)
    # made on the same scores, champion and rows: taken as they are
    ahead = made(first)
    taken = judge(ahead)
    assert [c.to_dict() for c in taken.checks] == [c.to_dict() for c in plain.checks]
    assert all(c is ahead.checks[i] for i, c in enumerate(taken.checks))
    assert "gates_ahead" in taken.timings and "gates_ahead" not in plain.timings
    # made when there was no champion yet, judged against one: checked again, against it
    redone = judge(made(None))
    assert "gates_ahead" not in redone.timings
    assert [c.to_dict() for c in redone.checks] == [c.to_dict() for c in plain.checks]
    assert redone.checks[0].evidence["champion_version"] == first
    # made on other rows (the same values): checked again
    other = check_ahead(spec, scored[second], {first: scored[first]}, first, holdout.copy(), None)
    assert "gates_ahead" not in judge(other).timings
