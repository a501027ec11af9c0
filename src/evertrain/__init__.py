"""evertrain: continuous training for production ML models.

The public API is re-exported here; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evertrain._lazy import lazy_exports
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

# The rest is imported when first used: `import evertrain` (and so every CLI command)
# stays fast instead of loading scipy, scikit-learn and pyarrow up front.
_LAZY = {
    "Schema": "evertrain.data.schema",
    "check_skew": "evertrain.data.schema",
    "infer_schema": "evertrain.data.schema",
    "validate_table": "evertrain.data.schema",
    "read_table": "evertrain.data.tables",
    "DriftReport": "evertrain.monitor",
    "PerformanceEstimator": "evertrain.monitor",
    "Profile": "evertrain.monitor",
    "domain_classifier_test": "evertrain.monitor",
    "drift": "evertrain.monitor",
    "pca_reconstruction_test": "evertrain.monitor",
    "profile": "evertrain.monitor",
    "Store": "evertrain.store",
    "AliasMove": "evertrain.store.registry",
    "ModelVersion": "evertrain.store.registry",
}

if TYPE_CHECKING:
    from evertrain.data.schema import Schema, check_skew, infer_schema, validate_table
    from evertrain.data.tables import read_table
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


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
