"""Joining Ray: the cluster at ``EVERTRAIN_RAY_ADDRESS`` (or the address given), else a local
Ray started in this process; for every part of training that runs on Ray (the ray executor,
sweeps, distributed fine-tuning).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evertrain import settings
from evertrain.exceptions import UsageError


def connect(address: str | None = None, *, needed_by: str = "the ray executor") -> Any:
    """Ray, initialised: joined to the cluster at ``address`` (default ``EVERTRAIN_RAY_ADDRESS``),
    or a local one started; Ray as it is when it already is.

    Token authentication is taken from the environment as Ray defines it: with
    ``RAY_AUTH_MODE`` unset and a token at hand (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), the client sends it, as a
    cluster started by current Ray expects. A cluster that does not answer within
    ``EVERTRAIN_RAY_CONNECT_TIMEOUT`` seconds is a one-line :class:`UsageError`.
    """
    try:
        import ray
    except ImportError:
        raise UsageError(f"{needed_by} needs Ray: pip install 'evertrain[ray]'") from None
    if not ray.is_initialized():
        address = address or settings.RAY_ADDRESS.raw() or None
        if address is not None and address != "local":
            check_reachable(address)
            if use_token_from_environment():
                _refresh_ray_config()
        try:
            with stdout_to_stderr():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"cannot join the Ray cluster at {address or 'a local Ray'}: {first}") from None
    return ray


def use_token_from_environment() -> bool:
    """Turn Ray's token authentication on for this process when a token is at hand and
    ``RAY_AUTH_MODE`` does not say otherwise; returns whether it is on."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.strip().lower() == "token"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or (
        Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()
    )
    if has_token:
        os.environ["RAY_AUTH_MODE"] = "token"  # what Ray itself does for a local cluster with a token
    return has_token


def _refresh_ray_config() -> None:
    """Make an already imported Ray read ``RAY_AUTH_MODE`` again (it caches its settings on import)."""
    try:
        import ray._raylet as raylet
    except ImportError:  # pragma: no cover - older Ray reads the environment when it connects
        return
    config = getattr(raylet, "Config", None)
    if config is not None:
        config.initialize("")


def check_reachable(address: str) -> None:
    """A quick TCP look at a Ray address (``host:port``, ``ray://host:port``), so that a cluster
    that is not there is reported in seconds with its address, not after Ray's long retries."""
    import socket

    target = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: Ray resolves them itself
    timeout = settings.get_float(settings.RAY_CONNECT_TIMEOUT) or 10.0
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"cannot reach the Ray cluster at {address} ({settings.RAY_ADDRESS.name}): {reason}"
        ) from None


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to standard output inside the block goes to standard error instead,
    Python's writes and the process's file descriptor 1 alike (Ray and Tune print banners and
    tables there), so that ``--json`` output stays JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
