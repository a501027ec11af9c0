"""Object storage for artifacts, logs and warehouse data: one way to open a URL, one error mapping.

Every part that reads or writes files by URL (the artifact store, the log writer and
reader, the Parquet and CSV sources) opens it with :func:`open_fs`, so that

- **storage options** (endpoint, region, credentials profile...) come from one place:
  the project file's ``storage.options`` (set with :func:`configure`) overlaid by the
  ``EVERTRAIN_STORAGE_OPTIONS`` environment variable (JSON). Both are keyed by fsspec
  protocol, e.g. ``{"s3": {"endpoint_url": "http://127.0.0.1:9000"}}``, and passed to
  fsspec as that protocol's storage options;
- **listings are fresh** where new files are expected: :func:`fresh_find` and
  :func:`fresh_glob` drop the filesystem's listing cache for the folder first. s3fs keeps
  one listing cache per process that never expires, so a long-running reader would
  otherwise miss parts that others wrote after its first look;
- **errors of any storage client become** :class:`~evertrain.exceptions.StoreError`
  naming the URL and the cause (:func:`storage_error`, :func:`is_transport_error`).
  botocore's connection errors, for one, are not ``OSError`` s.

>>> fs, path = open_fs("memory://evertrain-doc/a")
>>> fs.pipe_file(path, b"x")
>>> fresh_find(fs, "/evertrain-doc")
['/evertrain-doc/a']
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from evertrain import settings
from evertrain.exceptions import EvertrainError, NotFoundError, StoreError, UsageError

if TYPE_CHECKING:
    # Imported where a filesystem is opened: fsspec (asyncio with it) is a good share of a
    # quick command's start, and a store on the local disk reads and writes without it.
    import fsspec

_lock = threading.Lock()
_configured: dict[str, dict[str, Any]] = {}

#: Packages whose exceptions are a storage client's failures (transport, service, auth), not bugs here.
_CLIENT_MODULES = (
    "botocore",
    "aiobotocore",
    "boto3",
    "s3fs",
    "aiohttp",
    "urllib3",
    "requests",
    "gcsfs",
    "google",
    "adlfs",
    "azure",
    "fsspec",
    "s3transfer",
)


def check_options(options: Any, where: str) -> dict[str, dict[str, Any]]:
    """``options`` as ``{protocol: {option: value}}``; anything else is an error naming ``where``."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise UsageError(
            f"{where}: expected a mapping of protocol -> options, e.g. "
            f'{{"s3": {{"endpoint_url": "..."}}}}, got {type(options).__name__}'
        )
    out: dict[str, dict[str, Any]] = {}
    for protocol, values in options.items():
        if not isinstance(protocol, str) or not isinstance(values, Mapping):
            raise UsageError(
                f"{where}: the options of protocol {protocol!r} must be a mapping of option -> value, "
                f"got {type(values).__name__}"
            )
        out[protocol] = dict(values)
    return out


def configure(options: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Set this process's storage options (the project file's ``storage.options``)."""
    checked = check_options(options, "storage.options")
    with _lock:
        _configured.clear()
        _configured.update(checked)


def env_options() -> dict[str, dict[str, Any]]:
    """``EVERTRAIN_STORAGE_OPTIONS`` parsed (JSON object keyed by protocol)."""
    raw = settings.STORAGE_OPTIONS.raw()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"environment variable {settings.STORAGE_OPTIONS.name}: not valid JSON: {exc}"
        ) from None
    return check_options(value, f"environment variable {settings.STORAGE_OPTIONS.name}")


def options_for(protocol: str) -> dict[str, Any]:
    """The storage options of ``protocol``: the project file's, overlaid by the environment's."""
    with _lock:
        merged = dict(_configured.get(protocol, {}))
    merged.update(env_options().get(protocol, {}))
    return merged


def protocol_of(url: str) -> str:
    """The fsspec protocol of ``url`` (``file`` for a plain path)."""
    first = str(url).split("::", 1)[0]
    return first.split("://", 1)[0] if "://" in first else "file"


#: The fsspec protocols of the local filesystem.
LOCAL_PROTOCOLS = ("file", "local")


def local_path(url: str) -> str | None:
    """The absolute local path ``url`` names (a plain path, ``file://`` or ``local://``), else None.

    Told from the URL alone, without importing fsspec; the path is the one fsspec's local
    filesystem would use (user folder expanded, made absolute, forward slashes).

    >>> local_path("s3://bucket/artifacts") is None, local_path("file:///srv/artifacts")
    (True, '/srv/artifacts')
    """
    text = str(url)
    if "::" in text or protocol_of(text) not in LOCAL_PROTOCOLS:
        return None
    path = text.split("://", 1)[1] if "://" in text else text
    return os.path.abspath(os.path.expanduser(path)).replace(os.sep, "/")


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of ``url``, with this process's storage options for its protocol."""
    import fsspec

    options = options_for(protocol_of(url))
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **options)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot open storage URL {url}: {exc}") from None
    return fs, str(path)


def fresh_find(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Every file below ``path``, listed now: the listing cache of that folder is dropped first."""
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    return sorted(fs.find(path))


def fresh_ls(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The entries right under ``path`` (names with their path), listed now; none if it is missing."""
    fs.invalidate_cache(path)
    try:
        return sorted(str(p).rstrip("/") for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def fresh_glob(fs: fsspec.AbstractFileSystem, pattern: str) -> list[str]:
    """The files matching the glob ``pattern``, listed now."""
    fs.invalidate_cache()
    return sorted(str(p) for p in fs.glob(pattern))


def is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage client's failure (connection, timeout, service, auth) rather
    than a bug: worth retrying, and worth naming as a storage error. A missing file is not one."""
    if isinstance(exc, FileNotFoundError | EvertrainError):
        return False
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    for cls in type(exc).__mro__:
        module = cls.__module__.split(".", 1)[0]
        if module in _CLIENT_MODULES:
            return True
    return False


def describe(exc: BaseException) -> str:
    """A one-line cause: the exception's type and message, without a traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def storage_error(url: str, action: str, exc: BaseException) -> EvertrainError:
    """The evertrain error for ``exc`` raised while doing ``action`` on ``url``."""
    if isinstance(exc, EvertrainError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"cannot {action} at {url}: not found ({describe(exc)})")
    return StoreError(f"cannot {action} at {url}: {describe(exc)}")


@contextmanager
def storage_errors(url: str, action: str) -> Iterator[None]:
    """Turn a storage client's error inside the block into a :class:`StoreError` naming ``url``."""
    try:
        yield
    except EvertrainError:
        raise
    except Exception as exc:
        if isinstance(exc, FileNotFoundError) or is_transport_error(exc):
            raise storage_error(url, action, exc) from exc
        raise


__all__ = [
    "check_options",
    "configure",
    "describe",
    "env_options",
    "fresh_find",
    "fresh_glob",
    "fresh_ls",
    "is_transport_error",
    "local_path",
    "open_fs",
    "options_for",
    "protocol_of",
    "storage_error",
    "storage_errors",
]
