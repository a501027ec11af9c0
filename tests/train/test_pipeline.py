"""train_model: registration with lineage, idempotent steps, failures, budgets, sweeps, sources."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evertrain.data.examples import make_churn_stream
from evertrain.data.snapshots import load_snapshot
from evertrain.exceptions import BudgetExhausted, TrainingFailed, UsageError
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.artifacts import sha256_bytes
from evertrain.train.budget import Leases
from evertrain.train.pipeline import train_model
from evertrain.train.trainers import TrainContext, get_trainer, model_bytes

DAY = 86_400.0
CRASHING = """
def crash(train, valid, context):
    raise RuntimeError("out of memory, pretend")
"""


def _spec(**changes: Any) -> Spec:
    base: dict[str, Any] = {
        "model": {
            "name": "churn",
            "target": "churned",
            "trainer": {
                "kind": "lightgbm",
                "seed": 3,
                "early_stopping_rounds": 10,
                "params": {"num_boost_round": 60},
            },
        },
        "data": {
            "source": {"kind": "csv", "path": "churn.csv"},
            "time_column": "ts",
            "label_time_column": "label_ts",
        },
        "training": {"window": {"kind": "sliding", "rows": 1500}, "executor": "inline"},
        "gates": [{"kind": "threshold", "metric": "roc_auc", "min": 0.6}],
    }
    for dotted, value in changes.items():
        node = base
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return Spec.model_validate(base)


@pytest.fixture
def rows(project: Path, clock: Any) -> pd.DataFrame:
    data = make_churn_stream(2500, seed=8)
    data.to_csv(project / "churn.csv", index=False)
    clock.now = float(data["label_ts"].max()) + 1.0
    return data


def test_a_training_registers_a_version_with_its_lineage_and_run(
    store: Store, project: Path, rows: Any
) -> None:
    result = train_model(store, _spec(), project, reason="first", trigger="schedule")
    assert result.outcome == "accepted" and result.version == 1 and not result.resumed
    mv = store.registry.get_version("churn", 1)
    assert {s["role"] for s in mv.snapshots} == {"train", "valid", "holdout"}
    assert (mv.trigger, mv.parent, mv.run_id, mv.framework) == ("schedule", None, result.run_id, "lightgbm")
    assert mv.code_version and mv.metrics["roc_auc"] == result.metrics["holdout"]["roc_auc"]
    lineage = store.lineage.of_version("churn", 1)
    assert lineage["gates"][0]["passed"] and lineage["snapshots"][0]["sources"][0].startswith("csv:")
    run = store.runs.get(result.run_id)
    assert run.status == "succeeded" and run.params["cutoff"] == store.clock()
    assert run.metrics["train_seconds"] > 0 and run.result["curves"]["valid_binary_logloss"]
    assert run.result["outcome"] == "accepted" and "boosted" in run.result["log_tail"]
    assert store.artifacts.get(run.result["log_artifact"]).decode().count("training lightgbm") == 1
    assert set(run.result["timings"]) >= {"window", "snapshot", "train", "register", "evaluate", "total"}
    assert not (project / ".evertrain" / "work" / run.id).exists()
    # Its job folder is deleted after the step returned, by a thread the interpreter waits for.
    for thread in threading.enumerate():
        if thread.name == "evertrain-clear-job":
            thread.join()
    assert not any((project / ".evertrain" / "cleared").iterdir())
    # The next version's parent is the champion of the time.
    store.registry.promote("churn", 1, actor="tester")
    assert store.registry.get_version("churn", train_model(store, _spec(), project).version).parent == 1


def test_the_champion_predicts_only_the_holdout_rows_it_has_not_seen(
    store: Store, project: Path, clock: Any
) -> None:
    """Retrained in one process, the champion's scores on a holdout that moved by a few rows are
    those it gave before plus the new rows', and the gates and the report see what a fresh
    scoring gives."""
    from evertrain.evaluate.evaluation import evaluate_version
    from evertrain.train.overlap import ChampionScorer

    ChampionScorer.forget()
    stream = make_churn_stream(2600, seed=8)
    stream.iloc[:2500].to_csv(project / "churn.csv", index=False)
    clock.now = float(stream["label_ts"].iloc[:2500].max()) + 1.0
    spec = _spec(**{"training.window": {"kind": "expanding"}})
    store.registry.promote("churn", train_model(store, spec, project).version, actor="tester")
    first = train_model(store, spec, project)
    run = store.runs.get(first.run_id)
    n_holdout = len(load_snapshot(store, first.snapshots["holdout"]))
    assert run.result["champion_rows_predicted"] == n_holdout  # nothing seen before the promotion
    stream.to_csv(project / "churn.csv", index=False)  # the same stream, 100 rows further
    clock.now = float(stream["label_ts"].max()) + 1.0
    second = train_model(store, spec, project)
    predicted = store.runs.get(second.run_id).result["champion_rows_predicted"]
    n_holdout = len(load_snapshot(store, second.snapshots["holdout"]))
    assert 0 < predicted < n_holdout / 2
    ChampionScorer.forget()
    fresh = evaluate_version(store, spec, "churn", second.version, project=project, record=False)
    assert second.report is not None and fresh.champion_version == 1
    # The metrics came from the worker and the champion's thread: the same as computed afresh
    # (up to the last digit a sum in another process may round differently).
    for side in ("challenger", "champion"):
        assert second.report["metrics"][side] == pytest.approx(fresh.to_dict()["metrics"][side], rel=1e-12)
    assert [c["evidence"] for c in second.report["checks"]] == [
        c["evidence"] for c in fresh.to_dict()["checks"]
    ]


def test_inline_and_local_steps_register_the_same_model(store: Store, project: Path, rows: Any) -> None:
    """The inline executor takes the snapshot tables from memory, the local one from files: same model."""
    inline = train_model(store, _spec(), project)
    local = train_model(store, _spec(**{"training.executor": "local"}), project)
    first, second = (store.registry.get_version("churn", r.version) for r in (inline, local))
    assert first.artifact_sha256 == second.artifact_sha256
    assert first.snapshots == second.snapshots
    assert inline.metrics["holdout"] == local.metrics["holdout"]
    # The local worker finished its latency probe while the step judged: the figure is there.
    assert inline.report is not None and local.report is not None
    assert inline.report["latency_ms_per_row"] > 0 and local.report["latency_ms_per_row"] > 0
    # The local worker handed its holdout scores over first: the step checked the score gates
    # while the worker finished, and they say what the inline step's say.
    assert "gates_ahead" in local.report["timings"] and "gates_ahead" not in inline.report["timings"]
    assert local.report["checks"] == inline.report["checks"]
    for result in (inline, local):
        assert store.runs.get(result.run_id).result["info"]["holdout_scoring"] == "during training"
    # The local job's worker was started as the step began, its imports beside the windowing.
    log = store.artifacts.get(store.runs.get(local.run_id).result["log_artifact"]).decode()
    assert "started ahead of this job" in log
    # What lineage recorded is what was trained on: fitting on the snapshots' own tables gives
    # the registered bytes.
    spec = _spec()
    train, valid = (load_snapshot(store, inline.snapshots[role]) for role in ("train", "valid"))
    context = TrainContext(
        task="binary",
        target="churned",
        features=first.params["features"],
        seed=spec.model.trainer.seed,
        early_stopping_rounds=spec.model.trainer.early_stopping_rounds,
        num_threads=1,
        log=lambda line: None,
    )
    refit = get_trainer(spec.model.trainer).fit(train, valid, context)
    assert sha256_bytes(model_bytes(refit)[1]) == first.artifact_sha256


def test_a_step_that_fails_before_its_job_leaves_no_worker_behind(
    store: Store, project: Path, rows: Any
) -> None:
    from evertrain.exceptions import EvertrainError
    from evertrain.train.executors import LocalExecutor

    spec = _spec(**{"training.executor": "local", "model.target": "no_such_column"})
    with pytest.raises(EvertrainError, match="no_such_column"):
        train_model(store, spec, project)
    assert LocalExecutor._spare is None


def test_a_step_with_a_key_runs_once(store: Store, project: Path, rows: Any) -> None:
    first = train_model(store, _spec(), project, key="cycle-7/train")
    again = train_model(store, _spec(), project, key="cycle-7/train")
    assert (again.version, again.run_id, again.resumed) == (first.version, first.run_id, True)
    assert len(store.registry.list_versions("churn")) == 1
    assert len(store.runs.list(model="churn", kind="train")) == 1


def test_a_failed_training_is_a_failed_run_and_no_version(store: Store, project: Path, rows: Any) -> None:
    (project / "crashing.py").write_text(CRASHING)
    spec = _spec(**{"model.trainer": {"kind": "callable", "callable": "crashing:crash"}})
    with pytest.raises(TrainingFailed, match="RuntimeError: out of memory, pretend"):
        train_model(store, spec, project, key="k")
    [run] = store.runs.list(model="churn", kind="train")
    assert (
        run.status == "failed"
        and "out of memory" in str(run.error)
        and "out of memory" in run.result["log_tail"]
    )
    assert store.registry.list_models() == ["churn"] and store.registry.list_versions("churn") == []
    retried = train_model(store, _spec(), project, key="k")
    assert store.runs.get(retried.run_id).key == "k#2" and retried.version == 1


def test_daily_budget_and_concurrency_cap(store: Store, project: Path, rows: Any, clock: Any) -> None:
    spec = _spec(**{"training.budget": {"daily_train_seconds": 0.001, "max_concurrent": 1}})
    train_model(store, spec, project)
    with pytest.raises(BudgetExhausted, match="budget"):
        train_model(store, spec, project)
    clock.now += DAY  # a new day, a new budget
    Leases(store).acquire("train-slot:0", "elsewhere:1:busy")
    with pytest.raises(BudgetExhausted, match="1 training"):
        train_model(store, spec, project)
    refused = store.runs.list(model="churn", kind="train")[-1]
    assert refused.status == "failed" and "max_concurrent" in str(refused.error)


def test_a_small_sweep_records_its_trials(store: Store, project: Path, rows: Any) -> None:
    pytest.importorskip("optuna")
    spec = _spec(
        **{"training.sweep": {"trials": 3, "space": {"num_leaves": [3, 15], "learning_rate": [0.05, 0.2]}}}
    )
    result = train_model(store, spec, project)
    trials = store.runs.list(model="churn", kind="trial")
    assert len(trials) == 3 and {t.parent_id for t in trials} == {result.run_id}
    best = store.runs.get(result.run_id).result["sweep"]
    assert best["metric"] == "log_loss" and best["best_value"] == min(t.metrics["log_loss"] for t in trials)
    params = store.registry.get_version("churn", result.version).params["params"]
    assert {k: params[k] for k in best["best_params"]} == best["best_params"]


def test_a_sweep_over_a_parameter_lightgbm_has_not_is_refused_before_any_trial(
    store: Store, project: Path, rows: Any
) -> None:
    pytest.importorskip("optuna")
    spec = _spec(**{"training.sweep": {"trials": 2, "space": {"num_leafs": [3, 15]}}})
    refused = r"training\.sweep\.space: params: LightGBM has no parameter 'num_leafs'"
    with pytest.raises(UsageError, match=refused):
        train_model(store, spec, project)
    assert store.runs.list(model="churn", kind="trial") == []


def test_on_ray_the_sweep_is_a_ray_tune_experiment(
    store: Store, project: Path, rows: Any, ray_instance: Any
) -> None:
    space = {"num_leaves": [3, 15], "learning_rate": [0.05, 0.2]}
    spec = _spec(**{"training.executor": "ray", "training.sweep": {"trials": 3, "space": space}})
    result = train_model(store, spec, project)
    sweep = store.runs.get(result.run_id).result["sweep"]
    assert len(sweep["trials"]) == 3 and sweep["metric"] == "log_loss"
    trials = [store.runs.get(t["run_id"]) for t in sweep["trials"]]
    assert all(t.params["engine"] == "ray-tune" and t.status == "succeeded" for t in trials)
    assert all(set(t.params["params"]) == set(space) for t in trials)
    values = [t["value"] for t in sweep["trials"]]
    assert sweep["best_value"] == min(values)
    best = next(t for t in sweep["trials"] if t["value"] == sweep["best_value"])
    # The registered model is the best trial's, trained with the best trial's params.
    mv = store.registry.get_version("churn", result.version)
    assert (
        mv.params["params"]["num_leaves"]
        == best["params"]["num_leaves"]
        == sweep["best_params"]["num_leaves"]
    )
    assert result.outcome in ("accepted", "rejected") and result.report is not None


def test_weighted_window_and_golden_set(store: Store, project: Path, rows: pd.DataFrame) -> None:
    rows.iloc[:300].to_csv(project / "golden.csv", index=False)
    spec = _spec(
        **{
            "training.window": {"kind": "weighted", "half_life": "1d"},
            "training.holdout": {"fraction": 0.2, "golden_path": "golden.csv"},
        }
    )
    result = train_model(store, spec, project)
    assert "golden" in result.snapshots
    assert result.report is not None
    [evaluation] = store.lineage.evaluations("churn", result.version)
    assert evaluation["report"]["golden"]["n_rows"] == 300


def _partition(root: Path, log: str, frame: pd.DataFrame) -> None:
    folder = root / log / "model=churn" / "date=2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{uuid.uuid4().hex}.parquet"
    )


def test_training_from_the_serving_logs(store: Store, project: Path, rows: pd.DataFrame) -> None:
    features = ["region", "plan", "tenure_months", "monthly_spend", "support_calls", "visits"]
    ids = [f"r{i}" for i in range(len(rows))]
    predictions = rows[features].assign(
        request_id=ids,
        ts=rows["ts"],
        model_version=1,
        arm="champion",
        latency_ms=1.0,
        prediction=0.0,
        score=0.5,
    )
    logs = project / ".evertrain" / "logs"
    _partition(logs, "predictions", predictions)
    _partition(
        logs,
        "feedback",
        pd.DataFrame({"request_id": ids, "label": rows["churned"].astype(float), "ts": rows["label_ts"]}),
    )
    spec = _spec(**{"data": {"source": {"kind": "log"}}})
    result = train_model(store, spec, project)
    assert store.registry.get_version("churn", result.version).params["features"] == features
    assert result.metrics["holdout"]["roc_auc"] > 0.7


def test_after_an_abrupt_change_candidates_are_recorded_and_the_best_is_chosen(
    store: Store, project: Path, clock: Any
) -> None:
    """The configured window is kept; the rows after the change judge which training set wins."""
    rng = np.random.default_rng(4)
    n_before, n_after = 6000, 1200
    n = n_before + n_after
    x1, x2 = rng.uniform(size=n), rng.uniform(size=n)
    ts = np.arange(n, dtype=float) * 60.0
    # the concept flips at the change: what was positive is now negative
    y = np.where(np.arange(n) < n_before, x1 > 0.5, x1 <= 0.5).astype(int)
    pd.DataFrame({"ts": ts, "label_ts": ts, "x1": x1, "x2": x2, "y": y}).to_csv(
        project / "flip.csv", index=False
    )
    clock.now = float(ts[-1]) + 1.0
    spec = _spec(
        **{
            "model.target": "y",
            "data.source": {"kind": "csv", "path": "flip.csv"},
            # a window that holds every row, so the old concept is in it (the default keeps 5,000)
            "training.window": {"kind": "sliding", "rows": 10_000},
            "gates": [],
        }
    )
    change_at = float(ts[n_before])
    result = train_model(store, spec, project, trigger="drift", change_at=change_at)
    run = store.runs.get(result.run_id)
    window = run.result["window"]
    # judged on the rows after the change; every older row stays in the training window
    assert window["change_at"] == change_at and window["n_after_change"] == n_after
    assert window["n_train"] > n_before and window["train_time_range"][0] == 0.0
    candidates = {c["name"]: c for c in run.result["candidates"]}
    assert set(candidates) == {"window", "since_change", "upweighted"}
    assert candidates["window"]["n_train"] == window["n_train"]
    assert candidates["since_change"]["n_train"] == window["n_train_after_change"] >= 200
    [chosen] = [c for c in candidates.values() if c["chosen"]]
    assert chosen["name"] != "window"  # the old concept fails on the new rows
    assert chosen["valid_score"] > candidates["window"]["valid_score"] + 0.2
    mv = store.registry.get_version("churn", result.version)
    assert mv.params["training_set"] == chosen["name"]
    assert [c["name"] for c in mv.params["candidates"]] == ["window", "since_change", "upweighted"]
    assert result.metrics["holdout"]["accuracy"] > 0.9


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_after_a_change_earlier_champions_are_scored_and_a_close_call_keeps_the_fresh_model(
    store: Store, project: Path, clock: Any, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    """A rule, its opposite, the rule again: the first champion is offered when the rule comes
    back and scored on the same valid rows, but 1,200 rows teach the rule as well as it knew
    it, so the fresh model is kept (an earlier champion must do better by more than one
    standard error). An earlier champion that cannot be read is recorded as such; the
    training goes on without it."""
    rng = np.random.default_rng(5)
    sizes = (3000, 1200, 1200)
    n = sum(sizes)
    x1, x2 = rng.uniform(size=n), rng.uniform(size=n)
    ts = np.arange(n, dtype=float) * 60.0
    period = np.repeat([0, 1, 2], sizes)
    y = np.where(period == 1, x1 <= 0.5, x1 > 0.5).astype(int)
    spec = _spec(
        **{
            "model.target": "y",
            "data.source": {"kind": "csv", "path": "rule.csv"},
            "training.window": {"kind": "sliding", "rows": 10_000},
            "training.executor": executor,
            "gates": [],
        }
    )

    def train_until(rows: int, change_at: float | None) -> Any:
        frame = pd.DataFrame({"ts": ts, "label_ts": ts, "x1": x1, "x2": x2, "y": y})
        frame.iloc[:rows].to_csv(project / "rule.csv", index=False)
        clock.now = float(ts[rows - 1]) + 1.0
        return train_model(store, spec, project, trigger="drift", change_at=change_at)

    first = train_until(sizes[0], None)
    store.registry.promote("churn", first.version, actor="tester")
    opposite = train_until(sizes[0] + sizes[1], float(ts[sizes[0]]))
    store.registry.promote("churn", opposite.version, actor="tester")
    # the stale champion (the opposite rule) is not offered: its decay is what this answers
    back = train_until(n, float(ts[sizes[0] + sizes[1]]))
    records = {c["name"]: c for c in store.runs.get(back.run_id).result["candidates"]}
    recalled = records[f"version {first.version}"]
    assert f"version {opposite.version}" not in records
    fresh = records[recalled["against"]]  # the training set chosen among the fresh ones
    assert recalled["valid_loss"] < 0.05 and fresh["name"] in {"window", "since_change", "upweighted"}
    assert not recalled["chosen"] and fresh["chosen"]
    assert store.registry.get_version("churn", back.version).params["training_set"] == fresh["name"]
    assert back.metrics["holdout"]["accuracy"] > 0.95

    def unreadable(mv: Any) -> bytes:
        return b"not a model"

    monkeypatch.setattr(store.registry, "load_artifact", unreadable)
    again = train_until(n, float(ts[sizes[0] + sizes[1]]))
    records = {c["name"]: c for c in store.runs.get(again.run_id).result["candidates"]}
    assert (
        "error" in records[f"version {first.version}"] and not records[f"version {first.version}"]["chosen"]
    )
    assert records[fresh["name"]]["chosen"] and again.metrics["holdout"]["accuracy"] > 0.95


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_training_reports_its_stages_and_boosting_rounds(
    store: Store, project: Path, rows: Any, executor: str
) -> None:
    """Whoever watches is told the stage, then the worker's boosting rounds as they go
    (through the job's progress file, in a child process too), ending on the last one run."""
    from evertrain.train.progress import Progress

    seen: list[Progress] = []
    result = train_model(store, _spec(**{"training.executor": executor}), project, progress=seen.append)
    stages = [p.what for p in seen if p.done is None]
    assert stages == ["reading the data", "training", "checking the gates"]
    rounds = [p for p in seen if p.done is not None]
    assert rounds and {(p.what, p.total) for p in rounds} == {("boosting round", 60)}
    done = [p.done for p in rounds]
    assert done == sorted(done) and len(set(done)) == len(done)
    info = store.runs.get(result.run_id).result["info"]
    assert done[-1] == info["iterations_run"]  # the last round run is always shown
    # Reports came while the model was fitted, between the training and the gates.
    first, last = seen.index(rounds[0]), seen.index(rounds[-1])
    assert stages.index("training") < first and seen[last + 1].what == "checking the gates"


def test_a_champion_registered_on_fewer_columns_is_judged_beside_the_challenger(
    store: Store, project: Path, rows: pd.DataFrame
) -> None:
    """A model brought in by hand on four of the columns, promoted, then a training on all of
    them: the gates score the champion on its own columns and compare, instead of failing."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    numeric = ["tenure_months", "monthly_spend", "support_calls", "visits"]
    own = LogisticRegression(max_iter=300).fit(rows[numeric], rows["churned"])
    digest = store.artifacts.put(bytes(sio.dumps(own)))
    store.registry.register("churn", digest, framework="sklearn", actor="tester")
    store.registry.promote("churn", 1, actor="tester")
    spec = _spec(gates=[{"kind": "non_inferiority", "metric": "accuracy", "margin": 0.5}])
    result = train_model(store, spec, project)
    assert result.version == 2 and result.report is not None
    assert result.report["champion_version"] == 1
    check = result.report["checks"][0]
    assert check["passed"] and "champion" in check["reason"] and "no champion" not in check["reason"]


def test_labels_the_inputs_do_not_predict_give_the_base_rate_and_the_gate_says_it_learned_nothing(
    store: Store, project: Path, clock: Any
) -> None:
    """Shuffled labels: the worker keeps the base rate instead of trees that answer worse than it,
    scores the holdout with it (not with the trees it summed during training), and the gate on
    ROC AUC rejects a model that ranks nothing."""
    data = make_churn_stream(2500, seed=8)
    data["churned"] = np.random.default_rng(0).permutation(data["churned"].to_numpy())
    data.to_csv(project / "churn.csv", index=False)
    clock.now = float(data["label_ts"].max()) + 1.0
    result = train_model(store, _spec(**{"training.executor": "local"}), project)
    info = store.runs.get(result.run_id).result["info"]
    assert info["against_base_rate"]["model_kept"] is False
    assert info["holdout_scoring"] == "after training"
    assert result.outcome == "rejected" and result.report is not None
    assert result.report["metrics"]["challenger"]["roc_auc"] == 0.5  # one answer for every row
    assert (
        "no better than the base rate"
        in store.artifacts.get(store.runs.get(result.run_id).result["log_artifact"]).decode()
    )
