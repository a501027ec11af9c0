"""evertrain: continuous training for production ML models.

The public API is re-exported here; everything else is internal.
"""

from __future__ import annotations

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
    "EvertrainError",
    "GateFailed",
    "IntegrityError",
    "InvalidNameError",
    "ModelVersion",
    "NotFoundError",
    "SpecError",
    "Store",
    "StoreError",
    "UsageError",
    "__version__",
]
