"""The edge of the server: limits that hold before a request reaches a route.

* :class:`HostAllowlist` answers 400 to a request whose ``Host`` header is not in
  ``serving.allowed_hosts`` (against DNS rebinding: a web page whose name resolves to
  this server's address cannot talk to it through a user's browser). Health and metrics
  routes answer any host, so probes by IP address keep working.
* :func:`uvicorn_config` builds the server's uvicorn settings from ``serving``: a cap on
  connections and requests in progress (``max_connections``, 503 beyond it), the
  keep-alive timeout, and a connection class that closes a connection which has not sent
  a request's headers within ``header_timeout_seconds`` (uvicorn has no such timeout, so
  a client sending headers slowly would hold a connection forever) and, when set, caps the
  connections of one client address. The body's own deadline and the bytes of bodies in
  flight are the app's (``Server.body``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from evertrain.serve.metrics import ServeMetrics
from evertrain.spec import ServingSpec

ANY_HOST_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def host_of(header: str) -> str:
    """The host name of a ``Host`` header, without port, lowercase.

    >>> host_of("API.example.com:8080"), host_of("[::1]:80"), host_of("127.0.0.1")
    ('api.example.com', '::1', '127.0.0.1')
    """
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether ``host`` matches one of ``allowed`` (``*`` any, ``*.example.com`` its subdomains).

    >>> host_allowed("a.example.com", ["*.example.com"]), host_allowed("example.com.evil", ["example.com"])
    (True, False)
    """
    for pattern in allowed:
        p = pattern.strip().lower()
        if p == "*" or p == host:
            return True
        if p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1:
            return True
    return False


class HostAllowlist:
    """ASGI middleware: 400 for a ``Host`` that ``hosts`` does not name (health and metrics exempt)."""

    def __init__(self, app: Any, hosts: list[str], metrics: ServeMetrics | None = None) -> None:
        self.app = app
        self.hosts = list(hosts)
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in ANY_HOST_PATHS:
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers", ()):
            if key == b"host":
                header = value.decode("latin-1")
                break
        host = host_of(header)
        if host and host_allowed(host, self.hosts):
            await self.app(scope, receive, send)
            return
        if self.metrics is not None:
            self.metrics.refused.labels("host").inc()
        body = json.dumps(
            {"error": f"host {header!r} is not in the server's allowed hosts", "field": "host"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def guarded_protocol(
    header_timeout: float, per_client: int | None, metrics: ServeMetrics | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's h11 connection with a header deadline and an optional per-address cap."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_by_address: dict[str, int] = {}

    class GuardedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _address: str | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if per_client is not None and self.client is not None:
                self._address = self.client[0]
                count = open_by_address.get(self._address, 0) + 1
                open_by_address[self._address] = count
                if count > per_client:
                    if metrics is not None:
                        metrics.refused.labels("client_limit").inc()
                    self.transport.close()
                    return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request is under way: its body has the app's deadline
            elif not self.transport.is_closing():
                self._arm()  # bytes of headers came, but not all of them yet

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._address is not None:
                left = open_by_address.get(self._address, 1) - 1
                if left > 0:
                    open_by_address[self._address] = left
                else:
                    open_by_address.pop(self._address, None)
                self._address = None
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._timer is None:
                self._timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self.cycle is None or self.cycle.response_complete:
                if metrics is not None:
                    metrics.refused.labels("header_timeout").inc()
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(app: Any, serving: ServingSpec, host: str, port: int, **options: Any) -> Any:
    """uvicorn's settings for ``app`` with the limits of ``serving`` (``options`` add or override)."""
    import uvicorn

    metrics = getattr(getattr(getattr(app, "state", None), "server", None), "metrics", None)
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": guarded_protocol(serving.header_timeout_seconds, serving.max_connections_per_client, metrics),
        "limit_concurrency": serving.max_connections,
        "timeout_keep_alive": max(1, round(serving.keepalive_timeout_seconds)),
        "ws": "none",
        "access_log": False,
        "log_level": "warning",
        "lifespan": "on",
    }
    settings.update(options)
    return uvicorn.Config(app, **settings)
