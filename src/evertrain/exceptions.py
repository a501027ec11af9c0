"""The one error tree of evertrain.

Every error carries the CLI exit code and the HTTP status it maps to, so the faces
never guess::

    EvertrainError                    exit 2, HTTP 500
    ├── UsageError                    exit 2, HTTP 400   bad argument or name
    │   ├── InvalidNameError          exit 2, HTTP 400   model name or version with path characters
    │   ├── SpecError                 exit 2, HTTP 422   evertrain.yaml is wrong (file, line, field)
    │   └── DataValidationError       exit 2, HTTP 422   a table breaks its schema or cannot be read
    ├── NotFoundError                 exit 2, HTTP 404   no such model, version, snapshot or artifact
    ├── AuthError                     exit 2, HTTP 401   admin route without the right token
    ├── StoreError                    exit 2, HTTP 503   the metadata or artifact store failed
    └── CheckFailed                   exit 1, HTTP 409   a check ran and said no
        ├── ConflictError             exit 1, HTTP 409   a compare-and-swap lost the race
        ├── IntegrityError            exit 1, HTTP 500   a hash did not match (artifact, audit chain)
        ├── GateFailed                exit 1, HTTP 409   a challenger failed its gates
        ├── TrainingFailed            exit 1, HTTP 409   a training attempt crashed or ran out of time
        ├── BudgetExhausted           exit 1, HTTP 429   the daily budget or concurrency cap says no
        └── DriftDetected             exit 1, HTTP 200   a drift check found drift
"""

from __future__ import annotations


class EvertrainError(Exception):
    """Root of every error evertrain raises on purpose."""

    exit_code: int = 2
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(EvertrainError):
    http_status = 400


class InvalidNameError(UsageError):
    pass


class SpecError(UsageError):
    http_status = 422


class DataValidationError(UsageError):
    http_status = 422


class NotFoundError(EvertrainError):
    http_status = 404


class AuthError(EvertrainError):
    http_status = 401


class StoreError(EvertrainError):
    http_status = 503


class CheckFailed(EvertrainError):
    exit_code = 1
    http_status = 409


class ConflictError(CheckFailed):
    pass


class IntegrityError(CheckFailed):
    http_status = 500


class GateFailed(CheckFailed):
    pass


class TrainingFailed(CheckFailed):
    """A training attempt crashed, timed out or returned no model; its run keeps the error and logs."""


class BudgetExhausted(CheckFailed):
    """No training now: the daily compute budget is spent or every concurrent slot is taken."""

    http_status = 429


class DriftDetected(CheckFailed):
    http_status = 200
