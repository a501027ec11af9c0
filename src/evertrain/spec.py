"""The project file ``evertrain.yaml``, parsed and validated into typed objects.

One vocabulary for every part: the data source and schema, the model and its trainer,
the training window and label delay, monitoring and drift rules, triggers and the
retraining policy, gates, rollout steps, serving and alerts. Errors name the file, the
line and the field. ``Spec.model_json_schema()`` is published for editors
(``evertrain spec schema``).

Durations are seconds or strings such as ``"90s"``, ``"15m"``, ``"6h"``, ``"7d"``, ``"2w"``.

>>> spec = Spec.model_validate({"model": {"name": "churn", "target": "label"},
...                             "data": {"source": {"kind": "csv", "path": "data.csv"}}})
>>> spec.training.window.kind, spec.policy.cooldown, spec.gates[0].kind
('sliding', 21600.0, 'auto')
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.functional_validators import BeforeValidator

from evertrain.exceptions import SpecError
from evertrain.store.names import check_model_name

SPEC_FILE = "evertrain.yaml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"15m"``.

    >>> parse_duration("1.5h"), parse_duration(30)
    (5400.0, 30.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30, '90s', '15m', '6h', '7d' or '2w', got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

#: The macros cron itself understands (``@reboot`` aside: a controller has no boot).
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# Far enough back that a valid expression's next time is found (a leap day included).
_CRON_PROBE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def check_cron(expression: str) -> str:
    """A cron expression in UTC, checked by ``croniter`` with cron's own rules.

    Five fields (minute hour day-of-month month day-of-week) with names such as ``MON``
    and ``JAN``, or one of :data:`CRON_MACROS`. When both day fields are restricted, a day
    matches either one, as in cron. An expression that never matches (``0 0 30 2 *``) is
    refused too: a schedule that never fires is a mistake, not a choice.

    >>> check_cron("0 3 * * MON"), check_cron("@daily")
    ('0 3 * * MON', '@daily')
    """
    text = expression.strip() if isinstance(expression, str) else expression
    rule = (
        "expected five fields (minute hour day-of-month month day-of-week) "
        f"or one of {', '.join(CRON_MACROS)}"
    )
    if not isinstance(text, str) or not text:
        raise ValueError(f"cron {expression!r} is not a cron expression: {rule}")
    if text.startswith("@"):
        if text.lower() not in CRON_MACROS:
            raise ValueError(f"cron {expression!r} is not a known macro: {rule}")
    elif len(text.split()) != 5:
        raise ValueError(f"cron {expression!r} has {len(text.split())} fields: {rule}")
    try:
        croniter(text, _CRON_PROBE, day_or=True).get_next(float)
    except CroniterBadDateError:
        raise ValueError(f"cron {expression!r} names no date that exists: it would never fire") from None
    except CroniterError as exc:
        raise ValueError(f"cron {expression!r} is not valid ({exc}): {rule}") from None
    return text


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- data -------------------------------------------------------------------------------


class SourceSpec(_Part):
    """Where labelled rows come from.

    ``parquet`` and ``csv`` take a path or a glob (relative to the project folder);
    ``sql`` takes a SQLAlchemy ``url`` and a ``query``; ``duckdb`` a ``query`` over files;
    ``log`` reads the serving prediction log joined with its feedback labels, and its
    optional ``history`` (any other source) the labelled rows from before serving began;
    ``dvc`` reads the DVC-tracked ``path`` of the git repository ``repo`` at revision ``rev``;
    ``feast`` reads the rows of ``entities`` (any other source) with Feast ``features`` of the
    feature repo ``repo`` as of each row's time, run by the Feast environment's ``python``.
    """

    kind: Literal["parquet", "csv", "sql", "duckdb", "log", "dvc", "feast"]
    path: str | None = None
    url: str | None = None
    query: str | None = None
    repo: str | None = Field(
        None,
        description="For a dvc source: the git repository, a URL or a folder (relative to the project "
        "folder); default: the project folder. For a feast source: the feature repo folder (the one "
        "with feature_store.yaml).",
    )
    rev: str | None = Field(
        None, description="For a dvc source: the git revision (branch, tag or commit); default: HEAD."
    )
    features: list[str] | None = Field(
        None, description="For a feast source: the feature references, 'view:feature', to add to each row."
    )
    entities: SourceSpec | None = Field(
        None,
        description="For a feast source: the labelled rows (entity keys, event time, label) that Feast "
        "adds the features to; any other source, the serving log included.",
    )
    python: str | None = Field(
        None,
        description="For a feast source: the Python of an environment with feast installed (Feast pins "
        "pandas below evertrain's); default: evertrain's own.",
    )
    history: SourceSpec | None = Field(
        None,
        description="For a log source: a warehouse source with the labelled rows from before serving "
        "started, read beside the log (same feature and target names; times in 'ts' and 'label_ts').",
    )

    @model_validator(mode="after")
    def _needs(self) -> SourceSpec:
        if self.history is not None and self.kind != "log":
            raise ValueError(f"'history' belongs to a log source, not to a {self.kind} source")
        if self.history is not None and self.history.kind == "log":
            raise ValueError("the history of a log source cannot be a log source itself")
        if self.kind in ("parquet", "csv", "dvc") and not self.path:
            raise ValueError(f"a {self.kind} source needs 'path'")
        if self.kind not in ("dvc", "feast") and self.repo is not None:
            raise ValueError(f"'repo' belongs to a dvc or feast source, not to a {self.kind} source")
        if self.kind != "dvc" and self.rev is not None:
            raise ValueError(f"'rev' belongs to a dvc source, not to a {self.kind} source")
        feast_only = {"features": self.features, "entities": self.entities, "python": self.python}
        if self.kind != "feast":
            given = [name for name, value in feast_only.items() if value is not None]
            if given:
                raise ValueError(f"'{given[0]}' belongs to a feast source, not to a {self.kind} source")
        else:
            if not (self.repo and self.features and self.entities):
                raise ValueError("a feast source needs 'repo', 'features' and 'entities'")
            if self.entities.kind == "feast":
                raise ValueError("the entities of a feast source cannot be a feast source themselves")
            bad = [
                ref
                for ref in self.features
                if ref.count(":") != 1 or ref.startswith(":") or ref.endswith(":")
            ]
            if bad:
                raise ValueError(f"a feast feature is named 'view:feature', got {bad[0]!r}")
        if self.kind == "sql" and not (self.url and self.query):
            raise ValueError("a sql source needs 'url' and 'query'")
        if self.kind == "duckdb" and not self.query:
            raise ValueError("a duckdb source needs 'query'")
        return self


class DataSpec(_Part):
    source: SourceSpec
    time_column: str | None = Field(None, description="Event time of each row (epoch seconds or timestamp).")
    label_time_column: str | None = Field(
        None, description="When each row's label arrived; without it, event time + label_delay."
    )
    id_column: str | None = None
    label_delay: Duration = Field(0.0, description="How long after the event its label arrives.")
    schema_file: str | None = Field(
        None, description="A schema JSON file; inferred from training data if absent."
    )


# -- model and training -----------------------------------------------------------------


class DistributedSpec(_Part):
    """Data-parallel fine-tuning as a Ray Train job: ``workers`` processes (Ray Train's
    TorchTrainer, PyTorch DistributedDataParallel), each on its share of every micro-batch,
    their gradients averaged before each optimizer step; rank 0 writes the checkpoints and
    hands the adapter back. The cluster is the one at ``EVERTRAIN_RAY_ADDRESS``, else a
    local Ray started for the job. ``lora.device`` chooses the hardware: ``auto`` trains on
    GPUs (NCCL, one per worker) where the cluster has one for each worker and on CPUs
    (gloo) otherwise. ``lora.batch_size`` stays the rows of one micro-batch, dealt out among
    the workers (a multiple of the workers keeps their parts equal), so a job makes the
    same optimizer steps on the same rows whatever the number of workers: more workers make
    it faster, not different (dropout aside: each worker draws its own masks)."""

    workers: int = Field(ge=1, le=1024, description="Training processes (DDP ranks), each on its own device.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker.")


class LoraSpec(_Part):
    """Fine-tuning a base language model with LoRA (``kind: lora``, the ``llm`` extra).

    For a classifier (task binary or multiclass), the model reads one text column (its only
    feature, or ``text_column``): a LoRA adapter on the base and a classification head on its
    mean-pooled last hidden states. For task ``generation`` it is a causal language model
    fine-tuned on prompt/response pairs: the text column is the prompt, the target the
    response, and the loss is on the response's tokens only. The base model is read from a
    folder or an fsspec URL, never from a model hub.
    """

    base_model: str = Field(
        description="Folder (relative to the project) or fsspec URL of the base model, as "
        "save_pretrained writes it with safetensors weights and its tokenizer."
    )
    text_column: str | None = Field(
        None, description="The text feature, or the prompt for generation (default: the only feature)."
    )
    separator: str = Field(
        "\n",
        description="Generation: what joins a prompt to its response, in training and when generating "
        "(the model learns to answer after it).",
    )
    max_new_tokens: int = Field(
        32,
        ge=1,
        le=4096,
        description="Generation: tokens generated at most per answer, when scoring the holdout and when "
        "serving (a request may ask for fewer with parameters.max_new_tokens, never more).",
    )
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] | None = Field(
        None, description="Modules to adapt (default: PEFT's choice for the architecture)."
    )
    max_length: int = Field(128, ge=2, description="Tokens kept per text.")
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps at most (before the epochs end).")
    batch_size: int = Field(16, ge=1, description="Texts per micro-batch.")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of the steps with a rising rate.")
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_every: int | None = Field(
        None, ge=1, description="Optimizer steps between valid-loss checks (default: once per epoch)."
    )
    patience: int | None = Field(
        3, ge=1, description="Valid-loss checks without improvement before stopping; null: never stop early."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision of the forward pass (fp16 needs a GPU)."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: DistributedSpec | None = Field(
        None,
        description="Fine-tune as a Ray Train job with this many DDP workers (null: in the training "
        "job's own process).",
    )


class TrainerSpec(_Part):
    """How a model is fitted. The default is gradient boosting (LightGBM) for every task: it
    reads numeric, categorical and missing values as they come, learns threshold concepts
    and interactions that a linear model cannot, and needs no scaling; its defaults suit
    tables of a few hundred to a few hundred thousand rows (see ``docs/training.md``).
    ``kind: sklearn`` gives a linear model (or any named estimator) instead."""

    kind: Literal["sklearn", "lightgbm", "callable", "lora"] = Field(
        "lightgbm",
        description="lightgbm (default: gradient boosting), sklearn (an estimator by import path; "
        "default a linear model), callable, or lora (fine-tune a base language model on a text column).",
    )
    estimator: str | None = Field(
        None,
        description="Import path of a scikit-learn estimator, e.g. sklearn.linear_model.LogisticRegression.",
    )
    callable: str | None = Field(None, description="'package.module:function' for kind callable.")
    lora: LoraSpec | None = Field(None, description="For kind lora: the base model and fine-tuning settings.")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    early_stopping_rounds: int | None = 50
    warm_start: bool = False
    base_rate_check: bool = Field(
        True,
        description="LightGBM with the task's default objective: keep the trees only if they predict "
        "the valid part better than the training rows' base rate (mean per-row log loss, or squared "
        "error, lower by more than one standard error); otherwise the model is the base rate. "
        "false: the kept trees whatever they score.",
    )
    time_limit: Duration = 3600.0
    checkpoint_every: int | None = Field(
        None, ge=1, description="Boosting iterations between checkpoints (besides checkpoint_seconds)."
    )
    checkpoint_seconds: Duration | None = Field(
        30.0,
        description="Training time between checkpoints, so a killed training resumes; null: none by time.",
    )

    @model_validator(mode="after")
    def _needs(self) -> TrainerSpec:
        if self.kind == "callable" and not self.callable:
            raise ValueError("a callable trainer needs 'callable: package.module:function'")
        if self.callable and ":" not in self.callable:
            raise ValueError(f"callable must look like 'package.module:function', got {self.callable!r}")
        if self.kind == "lora" and self.lora is None:
            raise ValueError("a lora trainer needs 'lora: {base_model: FOLDER_OR_URL, ...}'")
        if self.lora is not None and self.kind != "lora":
            raise ValueError(f"'lora' settings belong to kind lora, not to kind {self.kind}")
        if self.kind == "lora" and self.params:
            raise ValueError("a lora trainer takes its settings under 'lora', not 'params'")
        known = _known_trainer_params(self.kind, self.estimator) if self.params else None
        unknown = sorted(set(self.params) - known) if known is not None else []
        if unknown:
            what = self.estimator if self.kind == "sklearn" else "LightGBM"
            hints = [f"{u!r}{_did_you_mean(u, known or set())}" for u in unknown]
            raise ValueError(f"params: {what} has no parameter {', '.join(hints)}")
        return self


def _known_trainer_params(kind: str, estimator: str | None) -> set[str] | None:
    """The parameter names the trainer's library accepts, or None when they cannot be known here.

    Importing LightGBM or scikit-learn to learn them costs seconds, and every command that
    reads the project file would pay it: the names are kept in a small cache file per library
    version (``EVERTRAIN_CACHE_DIR``, else the user's cache folder), read back without the import.
    """
    # Only the libraries' own classes are cached: a user's estimator may change under the same name.
    library = "lightgbm" if kind == "lightgbm" else None
    if kind == "sklearn" and (estimator or "").startswith("sklearn."):
        library = "scikit-learn"
    version = _installed_version(library) if library else None
    if version is None:
        return _library_trainer_params(kind, estimator)
    cache = _cache_dir() / f"trainer-params-{library}-{version}.json"
    key = estimator or ""
    try:
        cached: dict[str, list[str]] = json.loads(cache.read_text())
        if key in cached:
            return set(cached[key])
    except (OSError, ValueError, TypeError):
        cached = {}
    known = _library_trainer_params(kind, estimator)
    if known is None:
        return None
    cached[key] = sorted(known)
    try:  # a cache that cannot be written only costs the import next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(cached))
        partial.replace(cache)
    except OSError:
        pass
    return known


def _installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cache_dir() -> Path:
    configured = os.environ.get("EVERTRAIN_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evertrain"


def _library_trainer_params(kind: str, estimator: str | None) -> set[str] | None:
    """The parameter names, read from the library itself.

    LightGBM: every parameter and alias of its own list. scikit-learn: the estimator's
    constructor arguments (its ``get_params`` names), read from the class without
    building it. A library that is not installed, an estimator path that does not import
    (the trainer reports that) or a factory taking ``**kwargs`` is not checked.
    """
    import importlib
    import inspect

    if kind == "lightgbm":
        try:
            from lightgbm.basic import _ConfigAliases

            aliases = _ConfigAliases._get_all_param_aliases()
        except (ImportError, AttributeError):
            return None
        return {name for key, names in aliases.items() for name in (key, *names)}
    if kind != "sklearn" or not estimator or "." not in estimator:
        return None
    module_name, _, attr = estimator.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        signature = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters):
        return None
    return {p.name for p in parameters}


def _did_you_mean(word: str, choices: set[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing when none is close."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ModelSpec(_Part):
    name: str
    task: Literal["binary", "multiclass", "regression", "generation"] = Field(
        "binary",
        description="generation: a causal language model answering a prompt column with text (the "
        "target is the reference response); needs a lora trainer.",
    )
    target: str
    features: list[str] | None = Field(None, description="Default: every column but target, time and id.")
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    trusted_types: list[str] = Field(default_factory=list, description="Extra types skops may rebuild.")
    trust_pickle: bool = Field(
        False,
        description="Let `evertrain mlflow import` load a model MLflow saved with pickle or cloudpickle "
        "(loading it runs code from the file: only for models from a source you trust). It is stored "
        "re-saved in a safe format; without this, such models are refused.",
    )

    @model_validator(mode="after")
    def _text_model(self) -> ModelSpec:
        if self.task == "generation" and self.trainer.kind != "lora":
            raise ValueError("task generation needs a lora trainer (a causal language model to fine-tune)")
        if self.trainer.kind == "lora":
            if self.task == "regression":
                raise ValueError(
                    "a lora trainer classifies or generates text: "
                    "task must be binary, multiclass or generation"
                )
            text = self.trainer.lora.text_column if self.trainer.lora else None
            if self.features is not None and len(self.features) != 1 and text is None:
                raise ValueError(
                    "a lora trainer reads one text column: list one feature or name lora.text_column"
                )
        return self

    def text_features(self, features: Sequence[str]) -> list[str]:
        """Of ``features`` (the columns the model reads), those it reads as free text: a lora
        trainer's text column. Monitoring compares them as text, not as categories."""
        if self.trainer.kind != "lora":
            return []
        text = self.trainer.lora.text_column if self.trainer.lora else None
        if text is not None:
            return [text] if text in features else []
        return list(features) if len(features) == 1 else []

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_model_name(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None


#: Rows a sliding window keeps when the spec names neither ``rows`` nor ``duration``.
#: Chosen by measurement (``bench/ct_quality.py``, tuning seeds only): see ``docs/training.md``.
DEFAULT_WINDOW_ROWS = 5_000


class WindowSpec(_Part):
    """Which rows to train on: the last N rows or T seconds (sliding), all (expanding), or all
    with sample weights halving every ``half_life`` (weighted).

    A sliding window that names neither ``rows`` nor ``duration`` keeps the newest
    :data:`DEFAULT_WINDOW_ROWS` rows: bounded, so that old concepts leave the training set
    and a retrain costs the same in year three as in week one.
    """

    kind: Literal["sliding", "expanding", "weighted"] = "sliding"
    rows: int | None = Field(
        None,
        gt=0,
        description=f"Newest rows kept (sliding default {DEFAULT_WINDOW_ROWS} when no duration is named).",
    )
    duration: Duration | None = None
    half_life: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        """A sliding window with no bound of its own gets the default row cap."""
        if (
            isinstance(data, dict)
            and data.get("kind", "sliding") == "sliding"
            and "rows" not in data
            and data.get("duration") is None
        ):
            return {**data, "rows": DEFAULT_WINDOW_ROWS}
        return data

    @model_validator(mode="after")
    def _needs(self) -> WindowSpec:
        if self.kind == "weighted" and self.half_life is None:
            raise ValueError("a weighted window needs 'half_life'")
        return self


class HoldoutSpec(_Part):
    fraction: Probability = Field(0.2, description="Newest share of the window kept out of training.")
    duration: Duration | None = Field(None, description="Or the newest span of time instead of a share.")
    min_rows: int = Field(
        1000,
        ge=0,
        description="A share below this many rows is raised towards it (to at most a third of the rows), "
        "so that the gate can see a difference that matters: on 1,000 rows where two models disagree on "
        "a tenth, a paired test at 95% detects about 2.5 accuracy points with 80% power.",
    )
    golden_path: str | None = Field(None, description="An optional fixed golden set, evaluated every time.")


class BudgetSpec(_Part):
    daily_train_seconds: Duration = 4 * 3600.0
    max_concurrent: int = Field(1, ge=1)


class SweepSpec(_Part):
    trials: int = Field(0, ge=0, description="0 turns the sweep off.")
    space: dict[str, list[Any]] = Field(default_factory=dict, description="Parameter -> candidate values.")


class TrainingSpec(_Part):
    window: WindowSpec = Field(default_factory=WindowSpec)
    holdout: HoldoutSpec = Field(default_factory=HoldoutSpec)
    valid_fraction: float = Field(
        0.15,
        gt=0.0,
        lt=1.0,
        description="Newest share of the training part used for early stopping and valid metrics.",
    )
    executor: Literal["local", "ray", "inline"] = "local"
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec)


# -- monitoring, triggers, policy ---------------------------------------------------------


class DriftSpec(_Part):
    numeric_test: str = "ks"
    categorical_test: str = "chi2"
    correction: Literal["bonferroni", "bh"] = "bh"
    alpha: Probability = 0.05
    share_drifted: Probability = Field(
        0.5, description="Dataset drift when at least this share of columns drifts."
    )
    columns: list[str] | None = None


class MonitoringSpec(_Part):
    window_rows: int | None = Field(1000, gt=0)
    window_duration: Duration | None = None
    reference: Literal["training", "fixed"] = "training"
    reference_path: str | None = None
    drift: DriftSpec = Field(default_factory=DriftSpec)


class DriftTrigger(_Part):
    enabled: bool = True
    share_drifted: Probability = 0.3
    consecutive: int = Field(
        2,
        ge=1,
        description="Monitoring windows in a row that must drift (hysteresis). Two by default: a spell "
        "that lasts one window (a stormy week) is not worth a retrain; a lasting change shows in the next "
        "window too, and the retrain still learns from the first window on.",
    )
    min_labels_after: int = Field(
        300,
        ge=0,
        description="Labelled rows from after the drift began that a drift-triggered retrain waits for, "
        "so that it learns from the new data rather than the old (0: retrain at once).",
    )
    confirm: bool = Field(
        True,
        description="Retrain for a drift only if the champion's realized metric on the labelled rows from "
        "after it began is below its baseline by more than triggers.performance.drop; a shift of the inputs "
        "that leaves the predictions as good as before is recorded and left alone.",
    )


class PerformanceTrigger(_Part):
    enabled: bool = True
    metric: str | None = Field(
        None,
        description="The realized metric watched (default: the task's primary metric, accuracy or rmse). "
        "Metrics that need probabilities use the log's score column (binary models).",
    )
    drop: float = Field(
        0.01,
        ge=0.0,
        description="A decay is a loss of more than this (lower, or higher for errors such as rmse) against "
        "the champion's baseline: smaller losses are not worth a retrain (the default is the freshness "
        "gate's margin, the loss it tolerates in a fresher model). With 'confidence', the loss must also "
        "be statistically clear.",
    )
    confidence: float | None = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="For accuracy: the decay must be significant, by a one-sided test at this confidence "
        "of 'realized >= baseline - drop', with the uncertainty of both the realized rows and the "
        "holdout rows the baseline was measured on; a slow decay is then found as soon as the rows show "
        "it, a noisy window is not. null (and metrics other than accuracy): the realized value alone is "
        "compared with baseline - drop.",
    )
    min_labels: int = Field(200, ge=1)
    consecutive: int = Field(
        2,
        ge=1,
        description="The decay must show in each of this many consecutive parts (oldest to newest, equal "
        "counts) of the champion's newest labelled rows, not only on average: a one-window spell "
        "does not cost a retrain. 1: the average alone decides.",
    )
    learn_from: Literal["decay", "window"] = Field(
        "decay",
        description="What a retrain for decayed performance learns from: 'decay', the rows of the monitored "
        "window in which the decay showed, and after (the rows the champion now fails on); 'window', the "
        "training window as configured.",
    )


class EstimatedPerformanceTrigger(_Part):
    enabled: bool = False
    metric: Literal["accuracy", "roc_auc"] = "roc_auc"
    drop: float = Field(0.05, ge=0.0)


class ScheduleTrigger(_Part):
    # names (MON, JAN), macros (@daily) and cron's day rule are read too: see check_cron
    cron: str | None = Field(None, description="Five-field cron in UTC, e.g. '0 3 * * 0'.")
    every: Duration | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)


class VolumeTrigger(_Part):
    new_labelled_rows: int | None = Field(None, gt=0)


class MoreDataTrigger(_Part):
    """Try a challenger on a larger window when labelled rows have piled up and nothing decayed.

    A model trained on a small window (the first one, on little history) often improves
    with more of the same data, a gain no decay test sees. When the window a retrain would
    use now holds ``1 + growth`` times the rows of the window the champion was trained on,
    a challenger is trained on it and the champion gate decides (superiority on the newest
    rows: it must be shown better). A challenger that is not keeps the champion, and the
    next try for that champion waits until the rows there are to draw on (its window and
    the rows labelled since, counted with no bound) grow by the same factor again: the tries
    grow apart geometrically, and on a bounded window each learns from rows the last never
    saw. A champion trained after a change on the rows since it was offered the whole window
    and chose fewer rows: more of them is the decay tests' business, not this rule's. A try
    made while the inputs drift and their labels showed no loss must also gain at least
    ``triggers.performance.drop``: its new rows are the moved inputs the champion handles
    within that loss.
    """

    enabled: bool = Field(
        True,
        description="Try a challenger on a larger window when enough new labelled rows have arrived since "
        "the champion was trained and no decay or drift is being dealt with.",
    )
    growth: float = Field(
        1.0,
        ge=0.5,
        description="The window a retrain would use must hold at least 1 + growth times the rows of the "
        "champion's training window (1.0: twice as many). At 0.5 or more, the newest rows the gate judges on "
        "(at most a third of the window) are rows the champion never saw.",
    )
    min_new_rows: int = Field(
        1000,
        ge=1,
        description="Fewest labelled rows that must have arrived since the champion's training cut-off, "
        "so that a model trained on a few hundred rows is not retried after a few hundred more. A try "
        "never takes the day's last retrain (policy.max_retrains_per_day): that one is kept for a decay.",
    )


class TriggersSpec(_Part):
    drift: DriftTrigger = Field(default_factory=DriftTrigger)
    performance: PerformanceTrigger = Field(default_factory=PerformanceTrigger)
    estimated_performance: EstimatedPerformanceTrigger = Field(default_factory=EstimatedPerformanceTrigger)
    schedule: ScheduleTrigger = Field(default_factory=ScheduleTrigger)
    volume: VolumeTrigger = Field(default_factory=VolumeTrigger)
    more_data: MoreDataTrigger = Field(default_factory=MoreDataTrigger)


class PolicySpec(_Part):
    cooldown: Duration = Field(
        6 * 3600.0,
        description="No retrain sooner than this after the last one (the first model's training counts). "
        "What stops a retrain from triggering another is evidence: the new champion needs its own "
        "labelled rows before its performance can trigger; the cooldown only spaces retrains out. A try on "
        "more data (triggers.more_data) holds other such tries, never a retrain for a decay or a drift.",
    )
    max_retrains_per_day: int = Field(
        4, ge=0, description="A cap on the cost of retraining (manual retrains are not held by it)."
    )
    cycle_interval: Duration = Field(3600.0, description="Time between controller cycles.")


# -- gates --------------------------------------------------------------------------------


class ThresholdGate(_Part):
    kind: Literal["threshold"] = "threshold"
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> ThresholdGate:
        if self.min is None and self.max is None:
            raise ValueError("a threshold gate needs 'min' or 'max'")
        return self


class ChampionGate(_Part):
    """Paired-bootstrap comparison with the champion on the same holdout rows.

    non_inferiority passes when the lower bound of the interval of (challenger - champion)
    is above -margin; superiority when it is above +margin (margins in the metric's units,
    signs flipped for metrics where lower is better). auto (the freshness rule) is
    non_inferiority with ``margin`` when the version was trained for a confirmed decay (a
    drift its labels confirmed, or realized performance below its baseline): the champion
    is known to be stale, so a challenger as good on the newest rows wins by being fresher
    (unless it gives the champion's answer on every holdout row: it learned nothing new);
    otherwise it is superiority with no margin, which for a label metric of two classifiers
    with probabilities may also be shown by log-loss on the same rows (with the metric's
    estimate not worse), each way at half the error rate (see ``evaluate.gates``).
    """

    kind: Literal["non_inferiority", "superiority", "auto"] = "non_inferiority"
    metric: str = "accuracy"
    margin: float = Field(0.01, ge=0.0)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    n_boot: int = Field(1000, ge=100)


class SliceGate(_Part):
    kind: Literal["slices"] = "slices"
    column: str
    metric: str = "accuracy"
    margin: float = Field(0.02, ge=0.0)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    min_rows: int = Field(30, ge=1)
    correction: Literal["bonferroni", "holm"] = "holm"


class FairnessGate(_Part):
    kind: Literal["fairness"] = "fairness"
    sensitive: str
    max_demographic_parity_diff: float | None = Field(0.1, ge=0.0)
    max_equal_opportunity_diff: float | None = Field(0.1, ge=0.0)
    min_rows: int = Field(30, ge=1, description="Groups with fewer holdout rows are reported, not compared.")


class LatencyGate(_Part):
    kind: Literal["latency"] = "latency"
    max_ms_per_row: float = Field(gt=0.0)


class SizeGate(_Part):
    kind: Literal["size"] = "size"
    max_mb: float = Field(gt=0.0)


Gate = Annotated[
    ThresholdGate | ChampionGate | SliceGate | FairnessGate | LatencyGate | SizeGate,
    Field(discriminator="kind"),
]


# -- rollout, serving, alerts ---------------------------------------------------------------


class RolloutStep(_Part):
    share: Probability
    duration: Duration = Field(
        3600.0,
        description="Least time on this step. The default is one controller cycle (policy.cycle_interval): "
        "the controller judges a step once a cycle, and the undecided-step limit (6 x duration) must leave "
        "the canary several cycles to gather min_samples.",
    )
    min_samples: int = Field(200, ge=1)
    max_duration: Duration | None = Field(
        None,
        description="A step still undecided after this long is rolled back: a promotion needs evidence, "
        "and an undecided canary blocks retraining. Default: 6 x duration.",
    )


class AnalysisSpec(_Part):
    alpha: Probability = 0.05
    max_error_rate_increase: float = Field(0.01, ge=0.0)
    max_latency_increase: float = Field(0.25, ge=0.0, description="Relative increase of median latency.")
    quality_margin: float = Field(0.02, ge=0.0, description="Allowed drop of labelled quality.")
    min_labels: int = Field(100, ge=1)
    require_labels: bool = Field(
        False,
        description="Hold a step until min_labels feedback labels have arrived for each arm; "
        "otherwise quality is judged only where labels are there.",
    )


class RolloutSpec(_Part):
    shadow: RolloutStep | None = None
    steps: list[RolloutStep] = Field(
        default_factory=lambda: [RolloutStep(share=0.1), RolloutStep(share=0.5)],
    )
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    watch_after_promotion: Duration = Field(
        86400.0, description="How long a promoted version is watched for an automatic rollback."
    )
    sequential: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Judge the canary's quality with an always-valid confidence sequence that stops as soon "
        "as the labels show the challenger not worse (promote at once, skipping the remaining steps) or "
        "worse (roll back) by more than analysis.quality_margin, and holds the last step while it is "
        "undecided (at the step's limit the plain checks decide). auto: for a version trained for a "
        "confirmed decay, where every cycle on the stale champion costs, and for one tried on more data "
        "that the gate showed better (a rollout in progress holds every trigger); always; never. "
        "In sequential mode a version that the gate showed better than the champion on the newest "
        "labelled rows starts at the largest step and is promoted at its first look with no failed check.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[RolloutStep]) -> list[RolloutStep]:
        shares = [s.share for s in steps]
        if shares != sorted(shares) or len(set(shares)) != len(shares):
            raise ValueError(f"canary shares must increase step by step, got {shares}")
        return steps


class LogSpec(_Part):
    batch_rows: int = Field(1000, ge=1)
    flush_seconds: Duration = 1.0
    queue_max: int = Field(100_000, ge=1)


class BatchingSpec(_Part):
    """Adaptive batching: predict requests to one version that arrive together share one model call.

    A request joins the batch that is gathering for its version; the batch is answered as soon
    as every predict request in progress on that model has joined it, or ``max_wait_ms`` after
    its first request, or when it holds ``max_rows`` rows. A lone request is answered at once
    (no wait). Each request keeps its own validation, answer, log rows and latency; a model
    failure in a batch is retried request by request, so one bad request fails alone.
    """

    enabled: bool = Field(
        True, description="Gather concurrent requests into one model call; false: every request calls alone."
    )
    max_wait_ms: float = Field(
        2.0, ge=0.0, le=1000.0, description="The longest a request waits for others to join its batch."
    )
    max_rows: int = Field(
        256, ge=1, description="Rows in one model call at most; a fuller batch is answered at once."
    )


class FeastServingSpec(_Part):
    """Online features from Feast for predict requests, and the entity keys logged with each row.

    With a ``feast`` data source this is on by default and takes that source's ``repo``,
    ``features`` and ``python``; set it to serve from Feast with another data source, or to
    change what is read. A request then needs only the entity keys (and the features Feast
    does not hold); the server reads the rest from Feast's online store through a
    long-lived worker in Feast's environment, and logs the values it served.
    """

    repo: str | None = Field(
        None, description="The feature repo folder (with feature_store.yaml); default: data.source.repo."
    )
    python: str | None = Field(
        None, description="The Python of an environment with feast installed; default: data.source.python."
    )
    features: list[str] | None = Field(
        None,
        description="Feature references, 'view:feature', read for each request; default: "
        "data.source.features.",
    )
    feature_service: str | None = Field(
        None, description="A Feast feature service to read instead of a list of features."
    )
    entity_keys: list[str] | None = Field(
        None,
        description="The entity keys a request carries and the log keeps; default: the join keys of the "
        "features' views, as Feast declares them.",
    )
    online: bool = Field(
        True,
        description="Read the features a request lacks from the online store; false: requests carry every "
        "feature, and only the entity keys are checked and logged (Feast's worker starts once to tell their "
        "types, then stops).",
    )
    timeout_seconds: Duration = Field(
        2.0, gt=0, description="How long one online read may take before the request gets a 503."
    )

    @model_validator(mode="after")
    def _one_list(self) -> FeastServingSpec:
        if self.features is not None and self.feature_service is not None:
            raise ValueError("give serving.feast either 'features' or 'feature_service', not both")
        bad = [ref for ref in self.features or () if ref.count(":") != 1 or ref[0] == ":" or ref[-1] == ":"]
        if bad:
            raise ValueError(f"a feast feature is named 'view:feature', got {bad[0]!r}")
        if self.entity_keys is not None and not self.entity_keys:
            raise ValueError("serving.feast.entity_keys: name at least one key, or leave it out")
        return self


class ServingSpec(_Part):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_batch: int = Field(1000, ge=1)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    log: LogSpec = Field(default_factory=LogSpec)
    poll_seconds: Duration = Field(1.0, gt=0, description="How often a replica reads aliases and rollouts.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Larger request bodies get a 413.")
    range_tolerance: float | None = Field(
        0.5,
        ge=0.0,
        description="Numbers further than this share of the training range outside it are refused; "
        "null: no check.",
    )
    unknown_categories: Literal["accept", "refuse"] = Field(
        "accept", description="Whether a category not seen in training is served or refused with a 422."
    )
    shadow_queue_max: int = Field(
        1000, ge=1, description="Requests waiting for the shadow; more are not mirrored."
    )
    # -- limits against hostile or broken clients (docs/security.md) --
    max_connections: int = Field(
        2048, ge=1, description="Open connections and requests in progress; beyond it a request gets a 503."
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=1,
        description="Open connections from one client address; more are closed at once. "
        "null: no limit (behind a proxy every client has the proxy's address).",
    )
    max_body_bytes_in_flight: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Request body bytes held by all requests together; one that would pass it gets a 429.",
    )
    body_timeout_seconds: Duration = Field(
        10.0, gt=0, description="A request body must arrive whole within this long (else 408)."
    )
    header_timeout_seconds: Duration = Field(
        10.0, gt=0, description="A connection must send a request's headers within this long (else closed)."
    )
    keepalive_timeout_seconds: Duration = Field(
        5.0, gt=0, description="An idle kept-alive connection is closed after this long."
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header values accepted (a leading '*.' matches subdomains); others get a 400. "
        "null: any. Health and metrics routes answer any host.",
    )
    client_routing_key: bool = Field(
        True,
        description="Whether the client's X-Evertrain-Key header (or first request id) keeps it on one arm "
        "during a rollout; false: every request is routed at random.",
    )
    feast: FeastServingSpec | None = Field(
        None,
        description="Online features from Feast (default with a feast data source: that source's repo, "
        "features and python).",
    )


class StorageSpec(_Part):
    """Where the logs live and how object storage is reached (artifacts, logs, warehouse files)."""

    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="fsspec storage options by protocol, e.g. {s3: {endpoint_url: 'http://minio:9000', "
        "profile: prod}}; EVERTRAIN_STORAGE_OPTIONS (JSON) overlays them.",
    )
    logs_url: str | None = Field(
        None,
        description="Where serving replicas write the prediction and feedback logs (any fsspec URL); "
        "EVERTRAIN_LOGS_URL wins over it. Default: .evertrain/logs in the project folder.",
    )
    compact_every: int = Field(
        10, ge=0, description="Compact small log parts into larger ones every N controller cycles; 0: never."
    )


class TrackingSpec(_Part):
    """Experiment trackers that mirror the loop's trainings, metrics, gate verdicts and alias moves.

    Mirroring is one way (evertrain's store stays the record) and never holds the loop
    back: a tracker that is down is retried on the next cycle.
    """

    mlflow_uri: str | None = Field(
        None,
        description="An MLflow tracking server (http://host:5000) or store URI: each version becomes a "
        "run with its params and metrics, gate verdicts its tags, alias moves an aliases run. Needs "
        "the mlflow extra.",
    )
    mlflow_experiment: str | None = Field(None, description="Experiment name; default: evertrain-<model>.")
    wandb_project: str | None = Field(
        None,
        description="A Weights & Biases project that mirrors trainings and metrics (WANDB_MODE=offline "
        "writes them to ./wandb for a later `wandb sync`). Needs the wandb extra.",
    )


AlertEvent = Literal["drift", "decision", "gate_failed", "promotion", "rollback", "skew"]
ALERT_EVENTS: tuple[AlertEvent, ...] = ("drift", "decision", "gate_failed", "promotion", "rollback", "skew")


class Webhook(_Part):
    url: str
    events: list[AlertEvent] = Field(default_factory=lambda: list(ALERT_EVENTS))
    retries: int = Field(5, ge=0)


class AlertsSpec(_Part):
    webhooks: list[Webhook] = Field(default_factory=list)


#: The primary metric of each task: what the default gate compares.
PRIMARY_METRIC = {
    "binary": "accuracy",
    "multiclass": "accuracy",
    "regression": "rmse",
    "generation": "perplexity",
}


#: The non-inferiority margin of the default gate's freshness path, per task: one accuracy
#: point, the smallest loss the default analysis of a canary would also tolerate half of.
#: RMSE has the units of the target, so no margin can be chosen for it without the data:
#: regression keeps superiority unless the project sets one. Perplexity is a ratio whose scale
#: depends on the tokenizer and the text, so generation keeps superiority too.
DEFAULT_FRESHNESS_MARGIN = {"binary": 0.01, "multiclass": 0.01, "regression": 0.0, "generation": 0.0}


def default_gates(task: str) -> list[dict[str, Any]]:
    """The gates of a project that names none: one ``auto`` gate on the task's primary metric,
    on the same fresh holdout (paired bootstrap, 95%).

    Normally the challenger must beat the champion: a retrain that is only as good is not
    worth a rollout, and when the inputs shift under an unchanged labelling rule a retrained
    model is no better, so nothing is promoted. After a confirmed decay the champion is
    known to be stale, and a challenger not worse than it by more than the margin on the
    newest rows is promoted for being fresher. The first version passes.
    """
    return [
        {
            "kind": "auto",
            "metric": PRIMARY_METRIC.get(task, "accuracy"),
            "margin": DEFAULT_FRESHNESS_MARGIN.get(task, 0.0),
        }
    ]


class Spec(_Part):
    """The whole project file."""

    model: ModelSpec
    data: DataSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    triggers: TriggersSpec = Field(default_factory=TriggersSpec)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    gates: list[Gate] = Field(
        default_factory=list,
        description="Absent: one auto gate on the task's primary metric (accuracy, or rmse for "
        "regression): the challenger must beat the champion on the same holdout, or, after a confirmed "
        "decay, be not worse than it by more than the margin. An empty list: a challenger needs only to "
        "train. The first version passes champion-relative gates.",
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @model_validator(mode="before")
    @classmethod
    def _gates_by_default(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "gates" in data:
            return data
        model = data.get("model")
        task = model.get("task", "binary") if isinstance(model, dict) else getattr(model, "task", "binary")
        return {**data, "gates": default_gates(str(task))}

    @model_validator(mode="after")
    def _feast_serving(self) -> Spec:
        feast = self.serving.feast
        lacking = feast is not None and not (feast.repo and (feast.features or feast.feature_service))
        if lacking and self.data.source.kind != "feast":
            raise ValueError(
                "serving.feast without a feast data source needs 'repo' and 'features' or 'feature_service'"
            )
        return self

    def watched_metric(self) -> str:
        """The realized metric the performance trigger watches: ``triggers.performance.metric``,
        else the task's primary metric."""
        return self.triggers.performance.metric or PRIMARY_METRIC[self.model.task]

    def feast_serving(self) -> FeastServingSpec | None:
        """What serving reads from Feast: ``serving.feast`` over the ``feast`` data source's settings;
        ``None`` when the project has no Feast."""
        feast = self.serving.feast
        source = self.data.source
        if source.kind != "feast":
            return feast
        given = FeastServingSpec() if feast is None else feast
        return given.model_copy(
            update={
                "repo": given.repo or source.repo,
                "python": given.python or source.python,
                "features": given.features
                if given.features or given.feature_service
                else list(source.features or ()),
            }
        )


# -- loading with file, line and field in errors --------------------------------------------


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at pydantic location ``loc`` (or its nearest parent)."""
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if child is None:
                break
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            continue  # discriminator tags and other pydantic-only location parts
        line = node.start_mark.line + 1
    return line


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, lists, unions, Annotated)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _fields_at(loc: tuple[Any, ...]) -> set[str]:
    """The field names allowed at ``loc`` in the spec: what a misspelt key is compared with."""
    models: list[type[BaseModel]] = [Spec]
    for part in loc:
        if isinstance(part, int):
            continue
        nested = [
            m
            for model in models
            if (field := model.model_fields.get(str(part))) is not None
            for m in _models_in(field.annotation)
        ]
        if nested:
            models = nested
        # else: a discriminator tag in the location (``threshold`` of a gate): stay on the union
    return {name for model in models for name in model.model_fields}


def parse_spec(text: str, source: str = SPEC_FILE, base: Path | None = None) -> Spec:
    """Parse YAML text into a :class:`Spec`; errors name ``source``, the line and the field."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}:1: the project file must be a mapping, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
                message = "unknown key" + _did_you_mean(loc[-1], _fields_at(loc[:-1]))
            problems.append(f"{where}: field '{_field(loc)}': {message}")
        raise SpecError("; ".join(problems)) from None


def load_spec(project: Path | str) -> Spec:
    """Read ``evertrain.yaml`` from a project folder (or a path to the file itself)."""
    path = Path(project)
    if path.is_dir():
        path = path / SPEC_FILE
    if not path.is_file():
        raise SpecError(f"{path}: no evertrain.yaml here (use --project or evertrain init)")
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path.name), base=path.parent)


def dump_spec(spec: Spec) -> str:
    """The spec as YAML (defaults included), e.g. for ``init`` and for the audit log."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)


def canonical_json(spec: Spec) -> bytes:
    """The spec as canonical JSON (sorted keys, no spaces, defaults included): the bytes stored in the
    store for replicas, whose sha256 is the ``spec_sha256`` of every version trained with it."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def spec_from_json(data: bytes, source: str = "stored spec") -> Spec:
    """A spec back from :func:`canonical_json` bytes; errors name ``source`` and the field."""
    try:
        return Spec.model_validate_json(data)
    except ValidationError as exc:
        problems = [f"{source}: field '{_field(tuple(e['loc']))}': {e['msg']}" for e in exc.errors()]
        raise SpecError("; ".join(problems)) from None


def json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "evertrain project file (evertrain.yaml)"
    return schema
