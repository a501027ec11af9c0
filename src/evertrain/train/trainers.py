"""Trainers: one small interface, ``fit(train, valid, context) -> model``, one class per kind.

- ``sklearn``: an estimator (or a factory returning one) by import path, with params;
  a param written ``{"estimator": "path", "params": {...}}`` is built the same way, so
  a Pipeline is plain data in the spec. Text columns are one-hot encoded in front of a
  bare estimator that cannot take them.
- ``lightgbm``: boosting with early stopping on the valid part, a warm start from the
  parent version's booster, per-iteration valid curves, checkpoints (every 30 s by
  default) so a killed training resumes where it stopped, and the holdout scored tree by
  tree while it trains (:mod:`evertrain.train.tree_scoring`).
- ``callable``: any ``package.module:function`` taking ``(train, valid, context)`` and
  returning a model that one of the safe formats can save.

Seeds are explicit; a model's bytes are canonical (:func:`model_bytes`), so the same
data, params and seed give the same artifact hash.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import re
import time
import zipfile
from typing import Any

import numpy as np
import pandas as pd

from evertrain.exceptions import DataValidationError, TrainingFailed, UsageError
from evertrain.store.formats import BoosterModel, framework_of, get_format
from evertrain.train.context import TrainContext, Trainer, write_atomic
from evertrain.train.lora import LoraTrainer
from evertrain.train.prior import compare, prior_predictions, proper_losses

#: Boosting rounds when the spec's params name none; early stopping usually ends sooner.
DEFAULT_BOOST_ROUNDS = 500
#: LightGBM's ``min_data_in_leaf`` when the params name none: a leaf holds at least one
#: row in :data:`LEAF_SHARE` of the training rows, between :data:`MIN_LEAF_ROWS` and
#: LightGBM's own default of 20. LightGBM's 20 suits tens of thousands of rows; on a
#: window of a few hundred it caps the trees at a few dozen leaves of noisy averages, and
#: a fixed small value overfits large tables (see ``docs/training.md``).
LEAF_SHARE = 1 / 100
MIN_LEAF_ROWS = 5
MAX_LEAF_ROWS = 20
#: LightGBM spellings of the number of boosting rounds, all taken out of its params.
_ROUND_ALIASES = (
    "num_boost_round",
    "num_iterations",
    "num_iteration",
    "n_iter",
    "num_tree",
    "num_trees",
    "num_round",
    "num_rounds",
    "nrounds",
    "n_estimators",
    "max_iter",
)
_MIN_LEAF_ALIASES = (
    "min_data_in_leaf",
    "min_data_per_leaf",
    "min_data",
    "min_child_samples",
    "min_samples_leaf",
)
_LGB_OBJECTIVE = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
#: Standard errors by which the trees after their last iteration must beat the base rate on
#: the valid rows for the kept iteration not to be checked again on its own predictions: far
#: beyond the one the check asks, so that skipping it cannot change its answer in practice.
CLEAR_GAIN_SE = 4.0
_DEFAULT_ESTIMATOR = {
    "binary": "sklearn.linear_model.LogisticRegression",
    "multiclass": "sklearn.linear_model.LogisticRegression",
    "regression": "sklearn.linear_model.Ridge",
}
#: A zip timestamp fixed at the zip epoch, so that skops archives are byte-for-byte stable.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_CHECKPOINT_MODEL = "model.txt"
_CHECKPOINT_STATE = "state.json"


# -- scikit-learn ------------------------------------------------------------------------------


def import_object(path: str, *, what: str) -> Any:
    """``pkg.mod.Name`` or ``pkg.mod:Name`` imported; errors name the path and what it was for."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise UsageError(f"{what} {path!r} is not an import path like 'package.module.Name'")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{what} {path!r} cannot be imported: {exc}") from None


def build_estimator(path: str, params: dict[str, Any]) -> Any:
    """An estimator from an import path and params; nested ``{"estimator": ...}`` params are built too."""
    factory = import_object(path, what="estimator")
    return factory(**{k: _build_param(v) for k, v in params.items()})


def _build_param(value: Any) -> Any:
    if isinstance(value, dict) and "estimator" in value and set(value) <= {"estimator", "params"}:
        return build_estimator(value["estimator"], dict(value.get("params") or {}))
    if isinstance(value, list):
        built = [_build_param(v) for v in value]
        # Pipeline steps and ColumnTransformer entries are tuples in scikit-learn.
        return [tuple(v) if isinstance(v, list) else v for v in built]
    return value


def _seed_everywhere(estimator: Any, seed: int) -> None:
    """Give every nested ``random_state`` left unset the run's seed, so fits repeat exactly."""
    if not hasattr(estimator, "get_params"):
        return
    unset = {
        k: seed
        for k, v in estimator.get_params(deep=True).items()
        if (k == "random_state" or k.endswith("__random_state")) and v is None
    }
    if unset:
        estimator.set_params(**unset)


def _text_columns(X: pd.DataFrame) -> list[str]:
    return [
        c for c in X.columns if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
    ]


def _takes_missing(estimator: Any) -> bool:
    """Whether a scikit-learn estimator fits on NaN itself (its ``allow_nan`` tag)."""
    from sklearn.utils import get_tags

    try:
        return bool(get_tags(estimator).input_tags.allow_nan)
    except (AttributeError, TypeError, ValueError):
        return False


class SklearnTrainer(Trainer):
    kind = "sklearn"

    def make_estimator(self, context: TrainContext, X: pd.DataFrame) -> Any:
        """The estimator to fit: the spec's, or by default a scaled linear model.

        Text columns are one-hot encoded in front of a bare estimator that cannot read
        them (a missing value is a category of its own); the default linear model also
        gets its numeric columns standardized, which it needs to converge on features of
        different scales. Numeric gaps are filled with the training mean in front of the
        default linear model always (a gap first seen at serving must not fail), and in
        front of a named bare estimator when the training rows have gaps and the
        estimator does not take missing values itself.
        """
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        path = self.spec.estimator or _DEFAULT_ESTIMATOR[context.task]
        estimator = build_estimator(path, dict(self.spec.params))
        text = _text_columns(X)
        numeric = [c for c in X.columns if c not in text]
        steps: list[tuple[str, Any, list[str]]] = []
        if isinstance(estimator, Pipeline):
            _seed_everywhere(estimator, context.seed)
            return estimator  # a pipeline the spec spelled out encodes its own inputs
        if text:
            steps.append(("text", OneHotEncoder(handle_unknown="ignore"), text))
            context.log(f"one-hot encoding text feature(s) {', '.join(text)} in front of {path}")
        gaps = [c for c in numeric if X[c].isna().any()]
        if self.spec.estimator is None:
            steps.append(
                ("numeric", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric)
            )
        elif gaps and not _takes_missing(estimator):
            steps.append(("numeric", SimpleImputer(), numeric))
            context.log(f"filling gaps in {', '.join(gaps)} with the training mean in front of {path}")
        if steps:
            estimator = Pipeline(
                [("encode", ColumnTransformer(steps, remainder="passthrough")), ("model", estimator)]
            )
        _seed_everywhere(estimator, context.seed)
        return estimator

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext) -> Any:
        from sklearn.pipeline import Pipeline

        X, y = context.xy(train)
        text = _text_columns(X)
        # One spelling of a missing text value (NaN), as serving hands it over.
        X = X.astype({c: object for c in text})
        X = X.assign(**{c: X[c].where(X[c].notna(), np.nan) for c in text})
        estimator = self.make_estimator(context, X)
        kwargs: dict[str, Any] = {}
        weights = context.weights(train)
        if weights is not None:
            final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
            if "sample_weight" not in inspect.signature(final.fit).parameters:
                raise UsageError(
                    f"{type(final).__name__}.fit takes no sample_weight; a weighted window needs one"
                )
            key = (
                f"{estimator.steps[-1][0]}__sample_weight"
                if isinstance(estimator, Pipeline)
                else "sample_weight"
            )
            kwargs[key] = weights
        context.log(f"fitting {type(estimator).__name__} on {len(X)} rows x {X.shape[1]} features")
        estimator.fit(X, y, **kwargs)
        final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
        for attr in ("loss_curve_", "validation_scores_", "train_score_", "validation_score_"):
            values = getattr(final, attr, None)
            if values is not None and np.ndim(values) == 1:
                context.curves[attr.rstrip("_")] = [float(v) for v in values]
        return estimator


# -- LightGBM ----------------------------------------------------------------------------------


def default_min_leaf(n_rows: int) -> int:
    """LightGBM's ``min_data_in_leaf`` for ``n_rows`` training rows when the spec names none.

    >>> default_min_leaf(300), default_min_leaf(1_000), default_min_leaf(50_000)
    (5, 10, 20)
    """
    return int(min(MAX_LEAF_ROWS, max(MIN_LEAF_ROWS, round(n_rows * LEAF_SHARE))))


class LightGBMTrainer(Trainer):
    """Gradient boosting, one iteration at a time, so that early stopping, curves, deadlines
    and checkpoints are all handled in one loop that a resumed training re-enters."""

    kind = "lightgbm"

    def params(self, context: TrainContext, y: pd.Series) -> tuple[dict[str, Any], int]:
        params = dict(self.spec.params)
        rounds = DEFAULT_BOOST_ROUNDS
        for alias in _ROUND_ALIASES:
            if alias in params:
                rounds = int(params.pop(alias))
        params.setdefault("objective", _LGB_OBJECTIVE[context.task])
        if not any(k in params for k in _MIN_LEAF_ALIASES):
            params["min_data_in_leaf"] = default_min_leaf(len(y))
        if context.task == "multiclass":
            params.setdefault("num_class", int(y.max()) + 1)
        params.setdefault("verbosity", -1)
        params.setdefault("deterministic", True)
        params.setdefault("force_row_wise", True)
        params["seed"] = context.seed
        if context.num_threads:
            params.setdefault("num_threads", context.num_threads)
        return params, rounds

    @staticmethod
    def class_labels(y: pd.Series, task: str) -> list[Any] | None:
        """The class labels to code as 0..K-1 (sorted), or None when ``y`` holds those numbers
        already (or booleans, or a regression target).

        LightGBM learns classes numbered 0..K-1; text labels ("yes"/"no") or other numbers are
        coded for it, and the model answers with the labels again.

        >>> LightGBMTrainer.class_labels(pd.Series(["yes", "no", "yes"]), "binary")
        ['no', 'yes']
        >>> LightGBMTrainer.class_labels(pd.Series([0, 1, 1]), "binary") is None
        True
        """
        if task == "regression":
            return None
        values = pd.unique(y.dropna())
        if pd.api.types.is_bool_dtype(y):
            return None
        try:
            numbers = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            numbers = None
        coded = (
            numbers is not None
            and np.isfinite(numbers).all()
            and (numbers == np.round(numbers)).all()
            and (numbers >= 0).all()
            and (task != "binary" or numbers.max(initial=0) <= 1)
        )
        if coded:
            return None
        try:
            labels = sorted(values.tolist())
        except TypeError:  # labels of mixed types: in the order of their text
            labels = sorted(values.tolist(), key=str)
        return [v.item() if isinstance(v, np.generic) else v for v in labels]

    @staticmethod
    def _coded(y: pd.Series, classes: list[Any] | None, part: str) -> pd.Series:
        if classes is None:
            return y
        coded = y.map({c: i for i, c in enumerate(classes)})
        unknown = pd.unique(y[coded.isna() & y.notna()])
        if len(unknown):
            raise DataValidationError(
                f"target {y.name!r}: the {part} rows hold class(es) {', '.join(map(repr, unknown[:5]))} "
                f"that the training rows do not ({', '.join(map(repr, classes))})"
            )
        return coded

    def _load_checkpoint(self, context: TrainContext) -> tuple[Any, dict[str, Any]] | None:
        import lightgbm as lgb

        folder = context.checkpoint_dir
        if folder is None or not (folder / _CHECKPOINT_STATE).is_file():
            return None
        try:
            state = json.loads((folder / _CHECKPOINT_STATE).read_text())
            if state.get("fingerprint") != context.job_fingerprint():
                context.log("checkpoint belongs to other data or params; starting afresh")
                return None
            booster = lgb.Booster(model_str=(folder / _CHECKPOINT_MODEL).read_text())
        except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
            context.log(f"checkpoint unreadable ({type(exc).__name__}); starting afresh")
            return None
        return booster, state

    def _save_checkpoint(self, context: TrainContext, booster: Any, state: dict[str, Any]) -> None:
        folder = context.checkpoint_dir
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        # Model first, state second: a state file always describes a complete model file.
        write_atomic(folder / _CHECKPOINT_MODEL, booster.model_to_string().encode(), durable=False)
        state_json = json.dumps(dict(state, fingerprint=context.job_fingerprint())).encode()
        write_atomic(folder / _CHECKPOINT_STATE, state_json, durable=False)

    @staticmethod
    def _checkpoint_due(context: TrainContext, done: int, last: float) -> bool:
        """Whether a checkpoint is due: every ``checkpoint_every`` iterations or ``checkpoint_seconds``.

        By time is the default: writing the model costs more as it grows, so a fixed count of
        iterations either checkpoints a short training for nothing or a long one too rarely.
        """
        if context.checkpoint_every and done % context.checkpoint_every == 0:
            return True
        seconds = context.checkpoint_seconds
        return seconds is not None and seconds > 0 and time.monotonic() - last >= seconds

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext) -> Any:
        import lightgbm as lgb

        X, y = context.xy(train, categorical_as_category=True)
        classes = self.class_labels(y, context.task)
        y = self._coded(y, classes, "training")
        params, rounds = self.params(context, y)
        # The Datasets get the params too: built without them, LightGBM uses every core for
        # them, which on a shared host makes each iteration several times slower.
        weights = context.weights(train)
        train_set = lgb.Dataset(X, y.astype(float), weight=weights, free_raw_data=False, params=params)
        valid_sets, valid_names = [], []
        if len(valid):
            Xv, yv = context.xy(valid, categorical_as_category=True)
            yv = self._coded(yv, classes, "validation")
            valid_sets = [lgb.Dataset(Xv, yv.astype(float), reference=train_set, params=params)]
            valid_names = ["valid"]
        state: dict[str, Any] = {"done": 0, "best": 0, "best_score": None, "curve": [], "base": 0}
        init = None
        resumed = self._load_checkpoint(context)
        if resumed is not None:
            init, state = resumed
            context.log(f"resuming from checkpoint at iteration {state['done']}")
            context.info["resumed_from_iteration"] = state["done"]
        elif self.spec.warm_start and isinstance(context.parent, BoosterModel):
            parent_features = list(context.parent.booster_.feature_name())
            parent_classes = getattr(context.parent, "classes_", None)
            same_classes = (None if parent_classes is None else parent_classes.tolist()) == classes
            if not same_classes:
                context.log("warm start skipped: the parent was trained on other classes")
            elif parent_features == list(X.columns):
                init = context.parent.booster_
                state["base"] = int(init.current_iteration())
                context.log(f"warm start from the parent booster ({state['base']} iterations)")
                context.info["warm_start_iterations"] = state["base"]
            else:
                context.log("warm start skipped: the parent was trained on other features")
        metric_name = None
        if init is not None:
            booster = lgb.train(
                params,
                train_set,
                num_boost_round=1,
                init_model=init,
                valid_sets=valid_sets,
                valid_names=valid_names,
                keep_training_booster=True,
            )
        else:
            booster = lgb.Booster(params, train_set)
            for vs, vn in zip(valid_sets, valid_names, strict=True):
                booster.add_valid(vs, vn)
            booster.update()
        stop_after = self.spec.early_stopping_rounds if valid_sets else None
        scorer = context.tree_scorer
        checkpointed = time.monotonic()
        while True:
            state["done"] += 1
            context.progress(state["done"], rounds, "boosting round")
            if scorer is not None:
                scorer.offer(booster, state["base"] + rounds)
            if valid_sets:
                result = booster.eval_valid()[0]
                metric_name, value, maximize = result[1], float(result[2]), bool(result[3])
                state["curve"].append(value)
                best = state["best_score"]
                if best is None or (value > best if maximize else value < best):
                    state["best"], state["best_score"] = state["done"], value
            if self._checkpoint_due(context, state["done"], checkpointed):
                self._save_checkpoint(context, booster, state)
                checkpointed = time.monotonic()
            if state["done"] >= rounds or (stop_after and state["done"] - state["best"] >= stop_after):
                break
            context.check_deadline(f"after {state['done']} boosting iterations")
            booster.update()
        # Without early stopping every round is kept, as asked; with it, the best one.
        keep = state["best"] if (stop_after and state["best"]) else state["done"]
        total = state["base"] + keep
        context.info.update(
            best_iteration=keep, iterations_run=state["done"], early_stopping_metric=metric_name
        )
        if metric_name:
            context.curves[f"valid_{metric_name}"] = state["curve"]
            context.info[f"valid_{metric_name}"] = state["curve"][keep - 1]
        context.log(f"boosted {state['done']} iterations, keeping {keep}")
        if scorer is not None:
            # The last trees are scored while the kept model is checked, written and rebuilt.
            scorer.submit(booster, total)
            scorer.finish(total, of=BoosterModel(booster, classes=classes))
        checked = self.spec.base_rate_check and params["objective"] == _LGB_OBJECTIVE[context.task]
        if valid_sets and checked:
            against = self._against_prior(booster, total, state, Xv, yv, y, weights, params, context)
            context.info["against_base_rate"] = against
            if not against["model_kept"]:
                context.log(
                    f"the trees predict the valid rows no better than the base rate (loss "
                    f"{against['valid_loss']:.4f} against {against['prior_valid_loss']:.4f}, gain "
                    f"{against['gain']:+.4f}, one standard error {against['se']:.4f}): the base rate is kept"
                )
                if scorer is not None:
                    scorer.close("the base rate was kept, not the trees")
                text = self._base_rate(X, y, weights, params).model_to_string()
                return BoosterModel(lgb.Booster(model_str=text), text=text, classes=classes)
        text = booster.model_to_string(num_iteration=total)
        return BoosterModel(lgb.Booster(model_str=text), text=text, classes=classes)

    @staticmethod
    def _against_prior(
        booster: Any,
        total: int,
        state: dict[str, Any],
        Xv: pd.DataFrame,
        yv: pd.Series,
        y: pd.Series,
        weights: np.ndarray | None,
        params: dict[str, Any],
        context: TrainContext,
    ) -> dict[str, Any]:
        """The kept trees against the base rate of the training rows, on the valid rows
        (:mod:`evertrain.train.prior`).

        The booster holds its predictions on the valid rows after its last iteration; when
        those beat the base rate by more than :data:`CLEAR_GAIN_SE` standard errors, the
        kept iteration (early stopping kept the one with the lowest valid loss) is taken
        to beat it too, and the valid rows are not predicted again: a model with signal
        costs no extra pass, a model without one keeps few trees to predict with.
        """
        labels = yv.to_numpy(dtype=float)
        base = prior_predictions(
            context.task, y.to_numpy(dtype=float), weights, int(params.get("num_class", 2)), len(labels)
        )
        prior_losses = proper_losses(context.task, labels, base)
        last: list[np.ndarray] = []

        def capture(preds: np.ndarray, _data: Any) -> tuple[str, float, bool]:
            last.append(np.array(preds, dtype=float))
            return "base_rate_check", 0.0, False

        booster.eval_valid(feval=capture)
        at_last = compare(proper_losses(context.task, labels, last[0]), prior_losses)
        if state["done"] + state["base"] == total or at_last["gain"] > CLEAR_GAIN_SE * at_last["se"]:
            return {**at_last, "iteration": state["done"] + state["base"], "predicted_again": False}
        kept = booster.predict(Xv, num_iteration=total, num_threads=int(params.get("num_threads", 0) or 0))
        return {
            **compare(proper_losses(context.task, labels, kept), prior_losses),
            "iteration": total,
            "predicted_again": True,
        }

    @staticmethod
    def _base_rate(X: pd.DataFrame, y: pd.Series, weights: np.ndarray | None, params: dict[str, Any]) -> Any:
        """A booster of one tree with one leaf: the training rows' base rate, on the same
        features (a leaf may not hold fewer rows than there are, so no split is made)."""
        import lightgbm as lgb

        flat = {k: v for k, v in params.items() if k not in _MIN_LEAF_ALIASES}
        flat["min_data_in_leaf"] = len(y) + 1
        data = lgb.Dataset(X, y.astype(float), weight=weights, params=flat)
        return lgb.train(flat, data, num_boost_round=1)


# -- any callable ------------------------------------------------------------------------------


class CallableTrainer(Trainer):
    """``package.module:function(train, valid, context) -> model``; the project folder is importable."""

    kind = "callable"

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext) -> Any:
        function = import_object(self.spec.callable, what="trainer callable")
        if not callable(function):
            raise UsageError(
                f"trainer callable {self.spec.callable!r} is a {type(function).__name__}, not callable"
            )
        model = function(train, valid, context)
        if model is None:
            raise TrainingFailed(f"trainer callable {self.spec.callable!r} returned None instead of a model")
        framework_of(model)  # refuse, early and by name, a model no safe format can store
        return model


TRAINERS: dict[str, type[Trainer]] = {
    t.kind: t for t in (SklearnTrainer, LightGBMTrainer, CallableTrainer, LoraTrainer)
}


def get_trainer(spec: Any) -> Trainer:
    """The trainer for a spec's ``model.trainer``."""
    try:
        return TRAINERS[spec.kind](spec)
    except KeyError:
        raise UsageError(
            f"unknown trainer kind {spec.kind!r}; known: {', '.join(sorted(TRAINERS))}"
        ) from None


# -- canonical bytes ---------------------------------------------------------------------------

_SKOPS_IDS = re.compile(rb'("__id__": |"file": ")(\d+)')


def canonical_skops(data: bytes) -> bytes:
    """A skops archive rewritten so equal models give equal bytes.

    skops names arrays and nodes after Python object ids and stamps the current time on
    zip entries; both change from run to run. Ids are renumbered in order of first
    appearance in the schema (a renaming that keeps every reference intact) and entries
    get a fixed timestamp and a sorted order.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = source.read("schema.json")
    mapping: dict[bytes, bytes] = {}
    for match in _SKOPS_IDS.finditer(schema):
        mapping.setdefault(match.group(2), str(len(mapping) + 1).encode())

    def rename(name: str) -> str:
        stem, dot, ext = name.partition(".")
        return mapping.get(stem.encode(), stem.encode()).decode() + dot + ext

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in sorted(source.infolist(), key=lambda i: rename(i.filename)):
            body = source.read(info)
            if info.filename == "schema.json":
                body = _SKOPS_IDS.sub(lambda m: m.group(1) + mapping[m.group(2)], body)
            entry = zipfile.ZipInfo(rename(info.filename), date_time=_ZIP_EPOCH)
            entry.compress_type = info.compress_type
            entry.external_attr = info.external_attr
            target.writestr(entry, body)
    return out.getvalue()


def model_bytes(model: Any) -> tuple[str, bytes]:
    """The framework name and the canonical bytes a fitted model is stored as."""
    framework = framework_of(model)
    data = get_format(framework).dumps(model)
    if framework == "sklearn":
        data = canonical_skops(data)
    return framework, data
