"""The holdout scored tree by tree during boosting equals the registered model's own predictions."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.data.examples import make_churn_stream
from evertrain.evaluate.metrics import compute_many
from evertrain.evaluate.scoring import model_frame, predict_outputs
from evertrain.spec import TrainerSpec
from evertrain.store.formats import BoosterModel, get_format
from evertrain.train import tree_scoring
from evertrain.train.trainers import TrainContext, get_trainer, model_bytes
from evertrain.train.tree_scoring import VERIFY_SPREAD, TreeScorer, check_rows, numeric_rows, transform
from evertrain.train.worker import OUT_DIR, RESULT_FILE, TrainJob, execute_job, write_parts

FEATURES = ["region", "plan", "tenure_months", "monthly_spend", "support_calls", "visits"]


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_churn_stream(2400, seed=6)


def _parts(rows: pd.DataFrame, target: pd.Series | None = None) -> tuple[pd.DataFrame, ...]:
    if target is not None:
        rows = rows.assign(churned=target)
    return rows.iloc[:1500], rows.iloc[1500:1900], rows.iloc[1900:]


def _fit(
    spec: TrainerSpec,
    parts: tuple[pd.DataFrame, ...],
    task: str,
    chunk: int,
    parent: Any = None,
    handed: list[tuple[np.ndarray, Any]] | None = None,
) -> tuple[BoosterModel, TreeScorer, TrainContext]:
    train, valid, holdout = parts
    X = model_frame(holdout, FEATURES, categorical_as_category=True)
    scorer = TreeScorer(X, lookback=spec.early_stopping_rounds or 0, chunk=chunk)
    if handed is not None:
        scorer.on_summed = lambda out, of: handed.append((out, of))
    context = TrainContext(
        task=task,
        target="churned",
        features=FEATURES,
        seed=spec.seed,
        early_stopping_rounds=spec.early_stopping_rounds,
        parent=parent,
        tree_scorer=scorer,
        log=lambda line: None,
    )
    model = get_trainer(spec).fit(train, valid, context)
    # What gets registered is the model rebuilt from its bytes.
    framework, data = model_bytes(model)
    return get_format(framework).loads(data), scorer, context


CASES = {
    "binary": ("binary", None, {}),
    "multiclass": ("multiclass", lambda r: (r["tenure_months"] // 20).clip(0, 2).astype(int), {}),
    "regression": ("regression", lambda r: r["monthly_spend"] * 0.1 + r["visits"], {}),
    "poisson": ("regression", lambda r: r["support_calls"], {"objective": "poisson"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_summed_trees_equal_the_registered_model(case: str, rows: pd.DataFrame) -> None:
    task, make_target, params = CASES[case]
    parts = _parts(rows, None if make_target is None else make_target(rows))
    spec = TrainerSpec(
        kind="lightgbm",
        seed=4,
        early_stopping_rounds=8,
        params={"num_boost_round": 300, "learning_rate": 0.2, "num_leaves": 7, **params},
    )
    # A chunk size that the kept iteration is unlikely to fall on, so the last chunk is cut.
    handed: list[tuple[np.ndarray, Any]] = []
    model, scorer, context = _fit(spec, parts, task, chunk=7, handed=handed)
    kept = model.booster_.current_iteration()
    assert context.info["iterations_run"] > kept, "early stopping should have grown trees past the kept ones"
    summed, how = scorer.outputs(model, kept)
    assert summed is not None, how
    assert "during training" in how
    expected = model.booster_.predict(scorer.X)
    np.testing.assert_allclose(summed, expected, rtol=0, atol=1e-12)
    # The sums were handed over once, as soon as they existed: the very predictions checked here,
    # with the classes of the model they are of.
    [(early, of)] = handed
    assert np.array_equal(early, summed)
    assert getattr(of, "classes_", None) is None or of.classes_.tolist() == model.classes_.tolist()
    # The model's own output on the first rows (the latency probe's) checks the sums as well,
    # and an answer the sums do not match sends the rows to ordinary scoring.
    first = model.raw(scorer.X.iloc[:40])
    assert scorer.outputs(model, kept, first)[0] is not None
    summed, how = scorer.outputs(model, kept, first + 1e-6)
    assert summed is None and "differed" in how


def test_the_rows_that_check_the_sums_hold_every_category_and_missing_value(rows: pd.DataFrame) -> None:
    frame = model_frame(rows, FEATURES, categorical_as_category=True)
    frame.loc[frame.index[777], "region"] = np.nan
    frame.loc[frame.index[1234], "monthly_spend"] = np.nan
    picked = check_rows(frame)
    sample = frame.iloc[picked]
    for column in ("region", "plan"):
        assert set(sample[column].dropna()) == set(frame[column].dropna())
    assert 777 in picked and 1234 in picked
    assert len(picked) <= VERIFY_SPREAD + 12 and picked[0] == 0 and picked[-1] == len(frame) - 1


def test_a_numeric_matrix_that_predicts_otherwise_is_caught_during_the_fit(
    rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def swapped(X: pd.DataFrame, categories: Any) -> np.ndarray | None:
        matrix = numeric_rows(X, categories)
        assert matrix is not None
        column = list(X.columns).index("plan")
        matrix[:, column] = np.where(
            matrix[:, column] == 0, 1, np.where(matrix[:, column] == 1, 0, matrix[:, column])
        )
        return matrix

    monkeypatch.setattr(tree_scoring, "numeric_rows", swapped)
    spec = TrainerSpec(kind="lightgbm", seed=4, params={"num_boost_round": 40, "num_leaves": 7})
    model, scorer, _ = _fit(spec, _parts(rows), "binary", chunk=10)
    summed, how = scorer.outputs(model, model.booster_.current_iteration())
    assert summed is None and "numeric rows predicted" in how


def test_a_warm_start_sums_the_parent_trees_too(rows: pd.DataFrame) -> None:
    parts = _parts(rows)
    spec = TrainerSpec(
        kind="lightgbm",
        seed=2,
        early_stopping_rounds=5,
        warm_start=True,
        params={"num_boost_round": 60, "learning_rate": 0.3, "num_leaves": 5},
    )
    parent, _, _ = _fit(spec, parts, "binary", chunk=10)
    child, scorer, context = _fit(spec, parts, "binary", chunk=4, parent=parent)
    assert context.info["warm_start_iterations"] == parent.booster_.current_iteration()
    summed, how = scorer.outputs(child, child.booster_.current_iteration())
    assert summed is not None, how
    np.testing.assert_allclose(summed, child.booster_.predict(scorer.X), rtol=0, atol=1e-12)


def test_what_cannot_be_summed_is_scored_the_ordinary_way(rows: pd.DataFrame) -> None:
    assert transform(np.zeros(3), "cross_entropy_lambda") is None
    assert transform(np.zeros(3), "regression sqrt") is None
    train, valid, holdout = _parts(rows)
    spec = TrainerSpec(kind="lightgbm", seed=1, params={"num_boost_round": 20})
    # Rows the booster cannot read (a feature missing): the thread fails, the caller is told.
    broken = TreeScorer(model_frame(holdout, FEATURES[:-1], categorical_as_category=True))
    context = TrainContext(
        task="binary", target="churned", features=FEATURES, tree_scorer=broken, log=lambda line: None
    )
    model = get_trainer(spec).fit(train, valid, context)
    summed, how = broken.outputs(model, model.booster_.current_iteration())
    assert summed is None and "scored after training" in how
    # Asked for more iterations than were handed over: not guessed at.
    short, _, _ = _fit(spec, (train, valid, holdout), "binary", chunk=5)
    scorer = TreeScorer(model_frame(holdout, FEATURES, categorical_as_category=True))
    assert scorer.outputs(short, short.booster_.current_iteration())[0] is None


def test_the_worker_gates_on_the_same_numbers_as_ordinary_scoring(tmp_path: Path, rows: pd.DataFrame) -> None:
    write_parts(tmp_path, dict(zip(("train", "valid", "holdout"), _parts(rows), strict=True)))
    metrics = ["accuracy", "roc_auc", "log_loss", "brier", "ece"]
    TrainJob(
        trainer={
            "kind": "lightgbm",
            "seed": 3,
            "early_stopping_rounds": 10,
            "params": {"num_boost_round": 200},
        },
        task="binary",
        target="churned",
        features=FEATURES,
        seed=3,
        time_limit=120,
        fingerprint="tree-scoring",
        metrics=metrics,
    ).write(tmp_path)
    execute_job(tmp_path, log=lambda line: None)
    result = json.loads((tmp_path / OUT_DIR / RESULT_FILE).read_text())
    assert result["info"]["holdout_scoring"] == "during training"
    model = get_format("lightgbm").loads((tmp_path / OUT_DIR / "model.bin").read_bytes())
    outputs, _ = predict_outputs(model, _parts(rows)[2], FEATURES, "binary", "churned")
    ordinary = compute_many(metrics, outputs)
    for name in metrics:
        assert result["metrics"]["holdout"][name] == pytest.approx(ordinary[name], abs=1e-12)


def test_checkpoints_by_time_or_by_iterations(tmp_path: Path, rows: pd.DataFrame) -> None:
    train, valid, _ = _parts(rows)
    spec = TrainerSpec(kind="lightgbm", seed=1, early_stopping_rounds=None, params={"num_boost_round": 30})

    def fit(folder: Path, **when: Any) -> None:
        context = TrainContext(
            task="binary",
            target="churned",
            features=FEATURES,
            checkpoint_dir=folder,
            log=lambda line: None,
            **when,
        )
        get_trainer(spec).fit(train, valid, context)

    fit(tmp_path / "never", checkpoint_every=None, checkpoint_seconds=None)
    assert not (tmp_path / "never").exists()
    fit(tmp_path / "slow", checkpoint_every=None, checkpoint_seconds=3600)
    assert not (tmp_path / "slow").exists(), "a 30-iteration training needs no hourly checkpoint"
    fit(tmp_path / "timed", checkpoint_every=None, checkpoint_seconds=1e-9)
    assert json.loads((tmp_path / "timed" / "state.json").read_text())["done"] == 30
    fit(tmp_path / "counted", checkpoint_every=12, checkpoint_seconds=None)
    assert json.loads((tmp_path / "counted" / "state.json").read_text())["done"] == 24


def test_the_numeric_rows_are_what_lightgbm_predicts_on(rows: pd.DataFrame) -> None:
    """The matrix the chunks are scored on gives LightGBM's own predictions on the data frame:
    categories unseen in training, missing values, booleans and integers included."""
    train, valid, holdout = _parts(rows)
    spec = TrainerSpec(kind="lightgbm", seed=5, params={"num_boost_round": 30, "num_leaves": 7})
    context = TrainContext(task="binary", target="churned", features=FEATURES, log=lambda line: None)
    booster = get_trainer(spec).fit(train, valid, context).booster_
    odd = holdout.copy()
    odd.loc[odd.index[:5], "region"] = "atlantis"
    odd.loc[odd.index[5:10], "monthly_spend"] = np.nan
    odd.loc[odd.index[10:15], "plan"] = None
    odd["support_calls"] = odd["support_calls"].astype("int64")
    odd["visits"] = odd["visits"] > odd["visits"].median()
    X = model_frame(odd, FEATURES, categorical_as_category=True)
    matrix = numeric_rows(X, booster.pandas_categorical)
    assert matrix is not None and matrix.flags.c_contiguous
    np.testing.assert_array_equal(booster.predict(matrix, raw_score=True), booster.predict(X, raw_score=True))
    # Categories other than the booster's: not guessed at.
    assert numeric_rows(X, booster.pandas_categorical[:1]) is None


def test_rows_given_as_a_recipe_are_made_once_when_first_needed(rows: pd.DataFrame) -> None:
    """The worker hands the holdout's frame over as a recipe, so that the fit need not wait for
    it: nothing is made before the first chunk, then it is made once (by the scoring thread, or
    on a busy machine by the training thread that sums the chunks left), and the summed scores
    are the same."""
    train, valid, holdout = _parts(rows)
    made: list[str] = []

    def make() -> pd.DataFrame:
        made.append(threading.current_thread().name)
        return model_frame(holdout, FEATURES, categorical_as_category=True)

    spec = TrainerSpec(kind="lightgbm", seed=2, params={"num_boost_round": 30, "num_leaves": 7})
    scorer = TreeScorer(make, chunk=5)
    assert made == []
    context = TrainContext(
        task="binary", target="churned", features=FEATURES, tree_scorer=scorer, log=lambda line: None
    )
    model = get_trainer(spec).fit(train, valid, context)
    summed, how = scorer.outputs(model, model.booster_.current_iteration())
    assert summed is not None, how
    assert len(made) == 1 and made[0] in ("evertrain-holdout-trees", threading.current_thread().name)
    np.testing.assert_allclose(summed, model.raw(scorer.X), rtol=0, atol=1e-12)
    # Asked for before any chunk came, the rows are made by whoever asks.
    early = TreeScorer(make)
    assert len(early.X) == len(holdout) and made[-1] == threading.current_thread().name
    early.close()


def test_near_the_round_limit_the_trees_go_in_short_chunks(rows: pd.DataFrame) -> None:
    """Boosting that runs to its round limit leaves a few trees to score when it ends, not a chunk."""
    train, valid, holdout = _parts(rows)
    spec = TrainerSpec(kind="lightgbm", seed=4, early_stopping_rounds=None, params={"num_boost_round": 47})
    chunks: list[tuple[int, int]] = []

    class Recording(TreeScorer):
        def submit(self, booster: Any, stop: int) -> None:
            if stop > self.submitted:
                chunks.append((self.submitted, stop))
            super().submit(booster, stop)

    scorer = Recording(model_frame(holdout, FEATURES, categorical_as_category=True), chunk=20)
    context = TrainContext(
        task="binary", target="churned", features=FEATURES, seed=4, tree_scorer=scorer, log=lambda line: None
    )
    model = get_trainer(spec).fit(train, valid, context)
    assert chunks == [(0, 20), (20, 28), (28, 33), (33, 38), (38, 43), (43, 47)]
    summed, how = scorer.outputs(model, 47)
    assert summed is not None, how
    np.testing.assert_allclose(summed, model.booster_.predict(scorer.X), rtol=0, atol=1e-12)
