"""Trainer conformance, run on every trainer kind, and each trainer's own promises."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.data.examples import make_churn_stream
from evertrain.exceptions import DataValidationError, TrainingFailed, UsageError
from evertrain.spec import TrainerSpec
from evertrain.store.formats import get_format
from evertrain.train.trainers import TRAINERS, TrainContext, canonical_skops, get_trainer, model_bytes

FEATURES = ["region", "plan", "tenure_months", "monthly_spend", "support_calls", "visits"]

HELPERS = """
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def logistic(train, valid, context):
    X, y = context.xy(train)
    text = ["region", "plan"]
    numeric = [c for c in X.columns if c not in text]
    onehot = OneHotEncoder(handle_unknown="ignore")
    encode = make_column_transformer((onehot, text), (StandardScaler(), numeric))
    return make_pipeline(encode, LogisticRegression(random_state=context.seed)).fit(X, y)


def nothing(train, valid, context):
    return None


def not_a_model(train, valid, context):
    return object()
"""

PIPELINE = {
    "steps": [
        [
            "encode",
            {
                "estimator": "sklearn.compose.ColumnTransformer",
                "params": {
                    "transformers": [
                        [
                            "onehot",
                            {
                                "estimator": "sklearn.preprocessing.OneHotEncoder",
                                "params": {"handle_unknown": "ignore"},
                            },
                            ["region", "plan"],
                        ],
                        [
                            "scale",
                            {"estimator": "sklearn.preprocessing.StandardScaler"},
                            ["tenure_months", "monthly_spend", "support_calls", "visits"],
                        ],
                    ]
                },
            },
        ],
        ["model", {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"C": 0.5}}],
    ]
}

CASES = {
    "sklearn": TrainerSpec(kind="sklearn", seed=3),
    "sklearn-pipeline": TrainerSpec(
        kind="sklearn", estimator="sklearn.pipeline.Pipeline", params=PIPELINE, seed=3
    ),
    "lightgbm": TrainerSpec(kind="lightgbm", seed=3, params={"num_boost_round": 60, "num_leaves": 7}),
    "callable": TrainerSpec(kind="callable", callable="helpers_for_trainers:logistic", seed=3),
}


@pytest.fixture(autouse=True)
def _helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "helpers_for_trainers.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = make_churn_stream(1500, seed=2)
    return rows.iloc[:1200].reset_index(drop=True), rows.iloc[1200:].reset_index(drop=True)


def _context(**overrides: Any) -> TrainContext:
    base: dict[str, Any] = {
        "task": "binary",
        "target": "churned",
        "features": FEATURES,
        "seed": 3,
        "log": lambda line: None,
    }
    base.update(overrides)
    return TrainContext(**base)


def test_every_trainer_kind_has_a_conformance_case() -> None:
    # LoRA reads text, not these tables: its conformance (fit, bytes, reload) is in test_lora.py.
    assert {case.kind for case in CASES.values()} == set(TRAINERS) - {"lora"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_conformance(case: str, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = data
    spec = CASES[case]
    model = get_trainer(spec).fit(train, valid, _context(early_stopping_rounds=spec.early_stopping_rounds))
    framework, blob = model_bytes(model)
    loaded = get_format(framework).loads(blob)
    X = valid[FEATURES]
    if framework == "lightgbm":
        X = X.astype({"region": "category", "plan": "category"})
    proba = np.asarray(loaded.predict_proba(X))
    assert proba.shape == (len(valid), 2) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba, np.asarray(model.predict_proba(X)))
    assert set(np.unique(loaded.predict(X))) <= {0, 1}
    # Same data, params and seed: the same bytes, hence the same artifact hash.
    again = get_trainer(spec).fit(train, valid, _context(early_stopping_rounds=spec.early_stopping_rounds))
    assert model_bytes(again)[1] == blob
    with pytest.raises(DataValidationError, match="target column 'churned'"):
        get_trainer(spec).fit(train.drop(columns=["churned"]), valid, _context())


def test_lightgbm_early_stopping_curves_and_warm_start(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = data
    spec = TrainerSpec(
        kind="lightgbm",
        seed=1,
        early_stopping_rounds=5,
        params={"num_boost_round": 400, "learning_rate": 0.3},
        warm_start=True,
    )
    ctx = _context(early_stopping_rounds=5)
    parent = get_trainer(spec).fit(train, valid, ctx)
    assert ctx.info["best_iteration"] < ctx.info["iterations_run"] < 400
    assert len(ctx.curves["valid_binary_logloss"]) == ctx.info["iterations_run"]
    assert parent.booster_.current_iteration() == ctx.info["best_iteration"]
    child_ctx = _context(early_stopping_rounds=5, parent=parent)
    child = get_trainer(spec).fit(train, valid, child_ctx)
    assert child_ctx.info["warm_start_iterations"] == parent.booster_.current_iteration()
    assert (
        child.booster_.current_iteration()
        == parent.booster_.current_iteration() + child_ctx.info["best_iteration"]
    )


class _StopsAfter(TrainContext):
    """A context whose training is stopped after a given number of iterations, like a kill."""

    stop_at: int = 0
    seen: int = 0

    def check_deadline(self, where: str) -> None:
        self.seen += 1
        if self.seen >= self.stop_at:
            raise KeyboardInterrupt(where)


def test_lightgbm_resumes_from_its_checkpoint(
    tmp_path: Path, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, valid = data
    spec = TrainerSpec(kind="lightgbm", seed=1, early_stopping_rounds=None, params={"num_boost_round": 80})
    first = _StopsAfter(
        task="binary",
        target="churned",
        features=FEATURES,
        checkpoint_dir=tmp_path,
        checkpoint_every=20,
        fingerprint="job-1",
        log=lambda line: None,
    )
    first.stop_at = 50
    with pytest.raises(KeyboardInterrupt):
        get_trainer(spec).fit(train, valid, first)
    resumed = _context(checkpoint_dir=tmp_path, checkpoint_every=20, fingerprint="job-1")
    model = get_trainer(spec).fit(train, valid, resumed)
    assert resumed.info["resumed_from_iteration"] == 40
    assert model.booster_.current_iteration() == 80
    other = _context(checkpoint_dir=tmp_path, fingerprint="other-data")
    get_trainer(spec).fit(train, valid, other)
    assert "resumed_from_iteration" not in other.info


def test_sklearn_weights_curves_and_errors(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = data
    weighted = train.assign(w=np.linspace(0.1, 1.0, len(train)))
    ctx = _context(weight_column="w")
    get_trainer(TrainerSpec(kind="sklearn")).fit(weighted, valid, ctx)
    hgb = TrainerSpec(
        kind="sklearn",
        estimator="sklearn.ensemble.HistGradientBoostingClassifier",
        params={"max_iter": 20, "early_stopping": True},
    )
    ctx = _context()
    get_trainer(hgb).fit(train, valid, ctx)
    assert len(ctx.curves["train_score"]) > 1
    knn = TrainerSpec(kind="sklearn", estimator="sklearn.neighbors.KNeighborsClassifier")
    with pytest.raises(UsageError, match="takes no sample_weight"):
        get_trainer(knn).fit(weighted, valid, _context(weight_column="w"))
    with pytest.raises(UsageError, match=r"'sklearn\.nope\.Model' cannot be imported"):
        get_trainer(TrainerSpec(kind="sklearn", estimator="sklearn.nope.Model")).fit(train, valid, _context())


def test_lightgbm_learns_text_labels_and_answers_with_them(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """'yes'/'no' targets are coded 0/1 for LightGBM and decoded in every answer, also after
    the model file's round trip; a class the training rows lack is refused by name."""
    from evertrain.evaluate.scoring import predict_outputs

    train, valid = data
    as_text = {"churned": lambda f: np.where(f["churned"] == 1, "yes", "no")}
    texts, valid_texts = train.assign(**as_text), valid.assign(**as_text)
    numbers = get_trainer(CASES["lightgbm"]).fit(train, valid, _context())
    model = get_trainer(CASES["lightgbm"]).fit(texts, valid_texts, _context())
    loaded = get_format("lightgbm").loads(model_bytes(model)[1])
    X = valid[FEATURES].astype({"region": "category", "plan": "category"})
    assert list(loaded.classes_) == ["no", "yes"]
    expected = np.where(numbers.predict(X) == 1, "yes", "no")
    np.testing.assert_array_equal(loaded.predict(X), expected)  # the same trees, labels decoded
    np.testing.assert_allclose(loaded.predict_proba(X), numbers.predict_proba(X))
    outputs, order = predict_outputs(loaded, valid_texts, FEATURES, "binary", "churned")
    assert order == ["no", "yes"] and outputs.y.tolist() == valid["churned"].tolist()
    multi = texts.assign(churned=np.where(train["tenure_months"] > 30, "long", texts["churned"]))
    three = get_trainer(CASES["lightgbm"]).fit(multi, valid_texts.iloc[:0], _context(task="multiclass"))
    assert set(get_format("lightgbm").loads(model_bytes(three)[1]).predict(X)) <= {"long", "no", "yes"}
    odd = valid_texts.assign(churned="maybe")
    with pytest.raises(DataValidationError, match=r"class\(es\) 'maybe' that the training rows do not"):
        get_trainer(CASES["lightgbm"]).fit(texts, odd, _context())


def test_callables_must_return_storable_models(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = data
    with pytest.raises(TrainingFailed, match="returned None"):
        get_trainer(TrainerSpec(kind="callable", callable="helpers_for_trainers:nothing")).fit(
            train, valid, _context()
        )
    with pytest.raises(UsageError, match="no safe format"):
        get_trainer(TrainerSpec(kind="callable", callable="helpers_for_trainers:not_a_model")).fit(
            train, valid, _context()
        )


def test_canonical_skops_is_stable_and_loads(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    train, _ = data
    X, y = train[["tenure_months", "visits"]], train["churned"]
    raw = [sio.dumps(LogisticRegression().fit(X, y)) for _ in range(2)]
    canonical = [canonical_skops(r) for r in raw]
    assert canonical[0] == canonical[1]
    names = zipfile.ZipFile(io.BytesIO(canonical[0])).namelist()
    assert names == sorted(names)
    loaded = get_format("sklearn").loads(canonical[0])
    np.testing.assert_allclose(loaded.predict_proba(X), LogisticRegression().fit(X, y).predict_proba(X))


def test_lightgbm_keeps_the_base_rate_when_its_trees_learned_nothing(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Labels that the inputs do not predict: the trees would answer worse than the most frequent
    class; the model kept is the training rows' base rate, and the context says why. Inputs
    that do predict the label keep the trees, at no extra pass over the valid rows."""
    rng = np.random.default_rng(5)
    noise = pd.DataFrame(rng.normal(size=(3000, 4)), columns=["a", "b", "c", "d"])
    noise["y"] = (rng.random(3000) < 0.6).astype(int)
    train, valid, later = noise.iloc[:2000], noise.iloc[2000:2500], noise.iloc[2500:]
    spec = TrainerSpec(kind="lightgbm", seed=1, early_stopping_rounds=20)
    ctx = _context(target="y", features=["a", "b", "c", "d"], early_stopping_rounds=20)
    model = get_trainer(spec).fit(train, valid, ctx)
    check = ctx.info["against_base_rate"]
    assert check["model_kept"] is False and check["gain"] <= check["se"]
    proba = model.predict_proba(later[["a", "b", "c", "d"]])[:, 1]
    np.testing.assert_allclose(proba, train["y"].mean())  # one answer for every row: the base rate
    assert (model.predict(later[["a", "b", "c", "d"]]) == 1).all()
    # what was stored is that model
    framework, blob = model_bytes(model)
    np.testing.assert_allclose(
        get_format(framework).loads(blob).predict_proba(later[["a", "b", "c", "d"]])[:, 1], proba
    )

    # asked not to check, the trees are kept whatever they score
    unchecked = _context(target="y", features=["a", "b", "c", "d"], early_stopping_rounds=20)
    trees = get_trainer(spec.model_copy(update={"base_rate_check": False})).fit(train, valid, unchecked)
    assert "against_base_rate" not in unchecked.info
    assert np.unique(trees.predict_proba(later[["a", "b", "c", "d"]])[:, 1]).size > 1

    churn_train, churn_valid = data
    signal = _context(early_stopping_rounds=20)
    get_trainer(spec).fit(churn_train, churn_valid, signal)
    kept = signal.info["against_base_rate"]
    assert kept["model_kept"] is True and kept["gain"] > 4 * kept["se"]
    assert kept["predicted_again"] is False
