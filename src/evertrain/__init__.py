"""evertrain: continuous training for production ML models.

The public API is re-exported here; everything else is internal. The errors are
imported up front (they are small); the rest is imported when first used, so that
``import evertrain`` (and so every CLI command) stays fast instead of loading scipy,
scikit-learn, pyarrow and FastAPI up front.

>>> import evertrain
>>> issubclass(evertrain.GateFailed, evertrain.EvertrainError)
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evertrain.__version__ import __version__
from evertrain._lazy import lazy_exports
from evertrain.exceptions import (
    AuthError,
    BudgetExhausted,
    CheckFailed,
    ConflictError,
    DataValidationError,
    DriftDetected,
    EvertrainError,
    GateFailed,
    InputError,
    IntegrityError,
    InvalidNameError,
    LeaseLostError,
    NotFoundError,
    ServeError,
    SpecError,
    StoreError,
    TrainingFailed,
    UsageError,
)

# Name -> the module that defines it (or keeps it importable), imported on first use.
_LAZY = {
    "Controller": "evertrain.controller.loop",
    "backtest": "evertrain.controller.backtest",
    "Schema": "evertrain.data.schema",
    "check_skew": "evertrain.data.schema",
    "infer_schema": "evertrain.data.schema",
    "validate_table": "evertrain.data.schema",
    "read_table": "evertrain.data.tables",
    "GateReport": "evertrain.evaluate.evaluation",
    "evaluate_version": "evertrain.evaluate.evaluation",
    "DriftReport": "evertrain.monitor",
    "PerformanceEstimator": "evertrain.monitor",
    "Profile": "evertrain.monitor",
    "domain_classifier_test": "evertrain.monitor",
    "drift": "evertrain.monitor",
    "pca_reconstruction_test": "evertrain.monitor",
    "profile": "evertrain.monitor",
    "create_app": "evertrain.serve.app",
    "Spec": "evertrain.spec",
    "load_spec": "evertrain.spec",
    "parse_spec": "evertrain.spec",
    "Store": "evertrain.store",
    "AliasMove": "evertrain.store.registry",
    "ModelVersion": "evertrain.store.registry",
    "TrainResult": "evertrain.train.pipeline",
    "train_model": "evertrain.train.pipeline",
}

if TYPE_CHECKING:
    from evertrain.controller.backtest import backtest
    from evertrain.controller.loop import Controller
    from evertrain.data.schema import Schema, check_skew, infer_schema, validate_table
    from evertrain.data.tables import read_table
    from evertrain.evaluate.evaluation import GateReport, evaluate_version
    from evertrain.monitor import (
        DriftReport,
        PerformanceEstimator,
        Profile,
        domain_classifier_test,
        drift,
        pca_reconstruction_test,
        profile,
    )
    from evertrain.serve.app import create_app
    from evertrain.spec import Spec, load_spec, parse_spec
    from evertrain.store import Store
    from evertrain.store.registry import AliasMove, ModelVersion
    from evertrain.train.pipeline import TrainResult, train_model


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "AliasMove",
    "AuthError",
    "BudgetExhausted",
    "CheckFailed",
    "ConflictError",
    "Controller",
    "DataValidationError",
    "DriftDetected",
    "DriftReport",
    "EvertrainError",
    "GateFailed",
    "GateReport",
    "InputError",
    "IntegrityError",
    "InvalidNameError",
    "LeaseLostError",
    "ModelVersion",
    "NotFoundError",
    "PerformanceEstimator",
    "Profile",
    "Schema",
    "ServeError",
    "Spec",
    "SpecError",
    "Store",
    "StoreError",
    "TrainResult",
    "TrainingFailed",
    "UsageError",
    "__version__",
    "backtest",
    "check_skew",
    "create_app",
    "domain_classifier_test",
    "drift",
    "evaluate_version",
    "infer_schema",
    "load_spec",
    "parse_spec",
    "pca_reconstruction_test",
    "profile",
    "read_table",
    "train_model",
    "validate_table",
]
