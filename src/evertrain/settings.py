"""Every ``EVERTRAIN_*`` environment variable, typed and documented, in one place.

Values are read when asked for, not at import, so a test or a long-running process
sees the environment as it is now. Booleans parse strictly: ``1/true/yes/on`` and
``0/false/no/off`` (any case); anything else is an error naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evertrain.exceptions import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Variable:
    name: str
    doc: str
    default: str | None = None

    def raw(self) -> str | None:
        value = os.environ.get(self.name)
        return self.default if value is None or value == "" else value


def get_bool(var: Variable) -> bool:
    value = (var.raw() or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"environment variable {var.name}: expected a boolean (1/0, true/false), got {value!r}")


def get_float(var: Variable) -> float | None:
    value = var.raw()
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"environment variable {var.name}: expected a number, got {value!r}") from None


DB_URL = Variable(
    "EVERTRAIN_DB_URL",
    "SQLAlchemy URL of the metadata store. Default: SQLite at <project>/.evertrain/evertrain.db. "
    "A postgresql:// URL uses PostgreSQL through psycopg 3.",
)
ARTIFACTS_URL = Variable(
    "EVERTRAIN_ARTIFACTS_URL",
    "fsspec URL of the content-addressed artifact store. Default: <project>/.evertrain/artifacts.",
)
LOGS_URL = Variable(
    "EVERTRAIN_LOGS_URL",
    "fsspec URL of the prediction and feedback logs (Parquet partitions). "
    "Default: <project>/.evertrain/logs.",
)
RAY_ADDRESS = Variable("EVERTRAIN_RAY_ADDRESS", "Address of a Ray cluster for the Ray executor (ray.init).")
RAY_CONNECT_TIMEOUT = Variable(
    "EVERTRAIN_RAY_CONNECT_TIMEOUT",
    "Seconds to wait for a Ray cluster to answer before giving up with a one-line error. Default: 10.",
    "10",
)
STORAGE_OPTIONS = Variable(
    "EVERTRAIN_STORAGE_OPTIONS",
    "fsspec storage options by protocol, as JSON, e.g. "
    '\'{"s3": {"endpoint_url": "http://minio:9000", "client_kwargs": {"region_name": "eu-west-1"}}}\'. '
    "Overlays the project file's storage.options.",
)
SPOOL_DIR = Variable(
    "EVERTRAIN_SPOOL_DIR",
    "Local folder where a serving replica keeps log rows the log store could not take, until it "
    "takes them again. Default: .evertrain/spool under the current folder.",
)
ADMIN_TOKEN = Variable("EVERTRAIN_ADMIN_TOKEN", "Bearer token that the admin HTTP routes require.")
FEEDBACK_TOKEN = Variable(
    "EVERTRAIN_FEEDBACK_TOKEN",
    "Bearer token that the feedback route requires (unset: feedback is open). Not the admin token.",
)
MAX_MODEL_BYTES = Variable(
    "EVERTRAIN_MAX_MODEL_BYTES",
    "Largest model file, uncompressed, that is loaded (a skops zip's members together, a LightGBM "
    "text file); larger ones are refused before loading, so a small file cannot expand to fill memory.",
    default=str(512 * 1024 * 1024),
)
ROUTING_SECRET = Variable(
    "EVERTRAIN_ROUTING_SECRET",
    "Secret mixed into the canary routing hash, the same on every replica, so that no client can "
    "compute which routing key lands on the canary. Unset: derived from the admin token, else none.",
)
ACTOR = Variable(
    "EVERTRAIN_ACTOR",
    "Who is acting, as written in the registry and the audit log. Default: the login name.",
)
STATE_DIR = ".evertrain"

ALL = (
    DB_URL,
    ARTIFACTS_URL,
    LOGS_URL,
    STORAGE_OPTIONS,
    SPOOL_DIR,
    RAY_ADDRESS,
    RAY_CONNECT_TIMEOUT,
    ADMIN_TOKEN,
    FEEDBACK_TOKEN,
    ROUTING_SECRET,
    MAX_MODEL_BYTES,
    ACTOR,
)


#: Arrow's own variable naming its default allocator; where it is set, evertrain keeps that choice.
ARROW_POOL = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_arrow_allocator() -> None:
    """Arrow allocates from the C library's allocator in this process, unless ``ARROW_DEFAULT_MEMORY_POOL``
    says otherwise: for processes that pause between jobs (the controller, a worker kept warm).

    With Arrow's default allocator (mimalloc in the wheels), the first table read after a pause
    of a few seconds took 3 to 5 times as long as one right after another on Linux (0.10-0.27 s
    against 0.03-0.05 s for 148,000 rows x 33 columns of Parquet, bench/RESULTS.md, Training
    overhead), and every read of a controller comes after a pause; with the C library's, the
    first read after the pause took 0.03-0.07 s. Buffers already allocated keep the allocator
    they came from.
    """
    if os.environ.get(ARROW_POOL):
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def state_dir(project: Path) -> Path:
    return Path(project) / STATE_DIR


def db_url(project: Path) -> str:
    explicit = DB_URL.raw()
    if explicit:
        return explicit
    return f"sqlite:///{(state_dir(project) / 'evertrain.db').resolve()}"


def artifacts_url(project: Path) -> str:
    return ARTIFACTS_URL.raw() or str((state_dir(project) / "artifacts").resolve())


def logs_url(project: Path) -> str:
    return LOGS_URL.raw() or str((state_dir(project) / "logs").resolve())


def spool_dir() -> Path:
    """Where the log writer keeps rows the log store could not take (``EVERTRAIN_SPOOL_DIR``)."""
    explicit = SPOOL_DIR.raw()
    return Path(explicit) if explicit else (Path(STATE_DIR) / "spool").resolve()


def actor() -> str:
    explicit = ACTOR.raw()
    if explicit:
        return explicit
    try:
        return os.getlogin()
    except OSError:
        import getpass

        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"
