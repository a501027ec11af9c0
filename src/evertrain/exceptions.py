"""The one error tree of evertrain.

Every error carries a stable ``code`` (what a program matches on), the CLI exit code
and the HTTP status it maps to, so the faces never guess::

    EvertrainError                    exit 2, HTTP 500
    ├── UsageError                    exit 2, HTTP 400   bad argument or name
    │   ├── InvalidNameError          exit 2, HTTP 400   model name or version with path characters
    │   ├── SpecError                 exit 2, HTTP 422   evertrain.yaml is wrong (file, line, field)
    │   └── DataValidationError       exit 2, HTTP 422   a table breaks its schema or cannot be read
    │       └── InputError            exit 2, HTTP 422   a request breaks the input rules (names the field)
    ├── NotFoundError                 exit 2, HTTP 404   no such model, version, snapshot or artifact
    ├── AuthError                     exit 2, HTTP 401   admin route without the right token
    ├── StoreError                    exit 2, HTTP 503   the metadata or artifact store failed
    ├── ServeError                    exit 2, HTTP 500   an HTTP answer with its own status (404, 503...)
    └── CheckFailed                   exit 1, HTTP 409   a check ran and said no
        ├── ConflictError             exit 1, HTTP 409   a compare-and-swap lost the race
        │   └── LeaseLostError        exit 1, HTTP 409   a write of a holder that lost its lease (fenced)
        ├── IntegrityError            exit 1, HTTP 500   a hash did not match (artifact, audit chain)
        ├── GateFailed                exit 1, HTTP 409   a challenger failed its gates
        ├── TrainingFailed            exit 1, HTTP 409   a training attempt crashed or ran out of time
        ├── BudgetExhausted           exit 1, HTTP 429   the daily budget or concurrency cap says no
        └── DriftDetected             exit 1, HTTP 200   a drift check found drift

``InputError`` and ``ServeError`` set their HTTP status per instance (413 for a body
too large, 404 for an unknown model...); the tree shows their default.
"""

from __future__ import annotations


class EvertrainError(Exception):
    """Root of every error evertrain raises on purpose."""

    code: str = "error"
    exit_code: int = 2
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(EvertrainError):
    code = "usage"
    http_status = 400


class InvalidNameError(UsageError):
    code = "invalid_name"


class SpecError(UsageError):
    code = "spec"
    http_status = 422


class DataValidationError(UsageError):
    code = "data_validation"
    http_status = 422


class InputError(DataValidationError):
    """A request that breaks the input rules; ``field`` says where (``instances[0].age``)."""

    code = "input"

    def __init__(self, field: str, message: str, *, http_status: int = 422) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.http_status = http_status


class NotFoundError(EvertrainError):
    code = "not_found"
    http_status = 404


class AuthError(EvertrainError):
    code = "auth"
    http_status = 401


class StoreError(EvertrainError):
    code = "store"
    http_status = 503


class ServeError(EvertrainError):
    """An HTTP answer other than success, with its status (404 unknown model, 503 not ready...)."""

    code = "serve"

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.field = field


class CheckFailed(EvertrainError):
    code = "check_failed"
    exit_code = 1
    http_status = 409


class ConflictError(CheckFailed):
    code = "conflict"


class LeaseLostError(ConflictError):
    """A write refused because its process no longer holds the lease it started under (fencing)."""

    code = "lease_lost"


class IntegrityError(CheckFailed):
    code = "integrity"
    http_status = 500


class GateFailed(CheckFailed):
    code = "gate_failed"


class TrainingFailed(CheckFailed):
    """A training attempt crashed, timed out or returned no model; its run keeps the error and logs."""

    code = "training_failed"


class BudgetExhausted(CheckFailed):
    """No training now: the daily compute budget is spent or every concurrent slot is taken."""

    code = "budget_exhausted"
    http_status = 429


class DriftDetected(CheckFailed):
    code = "drift_detected"
    http_status = 200


__all__ = [
    "AuthError",
    "BudgetExhausted",
    "CheckFailed",
    "ConflictError",
    "DataValidationError",
    "DriftDetected",
    "EvertrainError",
    "GateFailed",
    "InputError",
    "IntegrityError",
    "InvalidNameError",
    "LeaseLostError",
    "NotFoundError",
    "ServeError",
    "SpecError",
    "StoreError",
    "TrainingFailed",
    "UsageError",
]
