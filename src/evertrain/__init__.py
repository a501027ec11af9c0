"""evertrain: continuous training for production ML models.

The public API is re-exported here; everything else is internal.
"""

from __future__ import annotations

from evertrain.data.schema import Schema, check_skew, infer_schema, validate_table
from evertrain.data.tables import read_table
from evertrain.exceptions import (
    AuthError,
    CheckFailed,
    ConflictError,
    DataValidationError,
    DriftDetected,
    EvertrainError,
    GateFailed,
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    SpecError,
    StoreError,
    UsageError,
)
from evertrain.monitor import (
    DriftReport,
    PerformanceEstimator,
    Profile,
    domain_classifier_test,
    drift,
    pca_reconstruction_test,
    profile,
)
from evertrain.store import Store
from evertrain.store.registry import AliasMove, ModelVersion

__version__ = "0.1.0"

__all__ = [
    "AliasMove",
    "AuthError",
    "CheckFailed",
    "ConflictError",
    "DataValidationError",
    "DriftDetected",
    "DriftReport",
    "EvertrainError",
    "GateFailed",
    "IntegrityError",
    "InvalidNameError",
    "ModelVersion",
    "NotFoundError",
    "PerformanceEstimator",
    "Profile",
    "Schema",
    "SpecError",
    "Store",
    "StoreError",
    "UsageError",
    "__version__",
    "check_skew",
    "domain_classifier_test",
    "drift",
    "infer_schema",
    "pca_reconstruction_test",
    "profile",
    "read_table",
    "validate_table",
]
