"""The serving app: KServe V1 predict and feedback, model status, health, metrics, admin.

``create_app(store, spec)`` returns an ASGI app (FastAPI) that serves every registered
model (or the ones named). Replicas share nothing but the store and the logs: each
polls aliases and rollout shares from the store (``models.py``), answers with the
champion or the canary (``router.py``), mirrors to the shadow off the response path,
and hands every answered row to the background log writer (``evertrain.data.logs``).

Bad input never gets a 5xx: bodies are bounded (413), read by pydantic models (and by
hand where those refuse one, to name the field: 422 for bad JSON, ``NaN`` included) and
checked against the version's training schema (422 naming the field and the value).
A canary that fails on valid input is answered by the champion instead and its failure
is logged for the rollout analysis.

This module wires the app: the error handlers, the inference and health routes, and
the OpenAPI security scheme. ``POST /v1/models/{name}:predict`` is answered by
:class:`PredictRoute` before FastAPI's router (its dependency solving costs as much as the
rest of a request); the route stays declared for the OpenAPI document and for the answers
to other methods, and the errors are answered as the app's handlers answer them. The
handlers' logic is the :class:`Server`'s (``server.py``), the body parsing is
``bodies.py`` and the admin routes ``admin.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from evertrain import settings
from evertrain.exceptions import EvertrainError, InputError, ServeError, UsageError
from evertrain.serve import openapi as doc
from evertrain.serve.admin import admin_routes
from evertrain.serve.bodies import json_response
from evertrain.serve.guard import HostAllowlist
from evertrain.serve.metrics import ServeMetrics
from evertrain.serve.server import Server
from evertrain.spec import ServingSpec, Spec
from evertrain.store import Store

RETRY_AFTER_SECONDS = "1"


def create_app(
    store: Store,
    spec: Spec | None = None,
    *,
    serving: ServingSpec | None = None,
    clock: Callable[[], float] = time.time,
    admin_token: str | None = None,
    feedback_token: str | None = None,
    logs_url: str | None = None,
    models: Iterable[str] | None = None,
    metrics: ServeMetrics | None = None,
    project: Path | None = None,
) -> FastAPI:
    """The serving app over ``store``.

    ``spec`` (optional) gives the serving settings, the rollout plan and the model's
    task, features and trusted types; without it every registered model is served with
    default settings. ``serving`` overrides ``spec.serving``. ``admin_token`` defaults to
    ``EVERTRAIN_ADMIN_TOKEN`` (unset: admin routes answer 401), ``feedback_token`` to
    ``EVERTRAIN_FEEDBACK_TOKEN`` (unset: feedback needs no token). ``logs_url`` defaults to
    the store's. ``models`` limits serving to those names. ``project`` is the folder that
    relative paths of the spec (a Feast repo) are read from (default: the current folder).
    Background threads start and stop with the app's lifespan (``app.state.server.start()``/
    ``stop()`` without one).
    """
    serving = serving or (spec.serving if spec is not None else ServingSpec.model_validate({}))
    url = logs_url or store.logs_url
    if not url:
        raise UsageError("the serving app needs a logs URL: pass logs_url or open the store with one")
    token = admin_token if admin_token is not None else settings.ADMIN_TOKEN.raw()
    labels_token = feedback_token if feedback_token is not None else settings.FEEDBACK_TOKEN.raw()
    server = Server(
        store,
        spec,
        serving,
        clock=clock,
        admin_token=token,
        feedback_token=labels_token,
        logs_url=url,
        only=models,
        metrics=metrics or ServeMetrics(),
        project=project,
    )

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(server.start)
        try:
            yield
        finally:
            await run_in_threadpool(server.stop)
            for stop in app_.state.stops:  # what parts mounted on the app start (the dashboard's thread)
                stop()

    app = FastAPI(
        title="evertrain serving",
        version="1",
        description="KServe V1 predict and feedback, model status, health, Prometheus metrics, admin routes.",
        lifespan=lifespan,
    )
    app.state.server = server
    app.state.stops = []  # callables run when the app stops, after the server
    _handlers(app, server)
    _routes(app, server, spec)
    app.add_middleware(PredictRoute, server=server)  # inside the host allowlist, added after it
    if serving.allowed_hosts is not None:
        app.add_middleware(HostAllowlist, hosts=serving.allowed_hosts, metrics=server.metrics)
    return app


def _error_response(status: int, message: str, field: str | None = None) -> Response:
    headers = None
    if status == 401:
        headers = {"www-authenticate": "Bearer"}
    elif status in (429, 503):
        headers = {"retry-after": RETRY_AFTER_SECONDS}
    return json_response({"error": message, "field": field}, status, headers)


def _evertrain_error(exc: EvertrainError) -> Response:
    """The answer to any of the project's errors: its status, its message, the field if it names one."""
    field = exc.field if isinstance(exc, InputError | ServeError) else None
    return _error_response(exc.http_status, exc.message, field)


_PREDICT_PATH = re.compile(r"^/v1/models/([^/]+):predict$")  # the route's own pattern


class PredictRoute:
    """ASGI middleware: predict requests straight to the :class:`Server`, past FastAPI's router."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = _PREDICT_PATH.match(path)
            if match is not None:
                request = Request(scope, receive)
                try:
                    response = await self.server.predict(match.group(1), request)
                except EvertrainError as exc:
                    response = _evertrain_error(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _handlers(app: FastAPI, server: Server) -> None:
    @app.exception_handler(EvertrainError)  # InputError and ServeError included: handlers go by class
    async def _evertrain(_: Request, exc: EvertrainError) -> Response:
        return _evertrain_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(422, f"{where}: {first.get('msg', 'invalid')}", where or None)


def _routes(app: FastAPI, server: Server, spec: Spec | None) -> None:
    max_batch = server.max_batch

    @app.post(
        "/v1/models/{name}:predict",
        summary="Predict (KServe V1)",
        tags=["inference"],
        response_model=None,
        responses={200: {"model": doc.PredictResponse}, **doc.errors(404, 408, 413, 422, 429, 500, 503)},
        openapi_extra=doc.body(doc.predict_request(max_batch)),
    )
    async def predict(name: str, request: Request) -> Response:
        return await server.predict(name, request)

    @app.post(
        "/v1/models/{name}:feedback",
        summary="Feedback labels for earlier predictions, by request id",
        tags=["inference"],
        response_model=None,
        responses={
            200: {"model": doc.FeedbackResponse},
            **doc.errors(401, 404, 408, 413, 415, 422, 429, 503),
        },
        openapi_extra=doc.body(doc.feedback_request(max_batch)),
    )
    async def feedback(name: str, request: Request) -> Response:
        return await server.feedback(name, request)

    @app.get(
        "/v1/models",
        summary="The models served (KServe V1 list), with readiness and aliases",
        tags=["inference"],
        response_model=None,
        responses={200: {"model": doc.ModelList}},
    )
    async def list_models() -> Response:
        return json_response(server.list_models())

    @app.get(
        "/v1/models/{name}",
        summary="Model status: versions, readiness and inputs",
        tags=["inference"],
        response_model=None,
        responses={200: {"model": doc.ModelStatus}, **doc.errors(404)},
    )
    async def model_status(name: str) -> Response:
        return json_response(server.model_status(name))

    @app.get(
        "/healthz",
        summary="Liveness",
        tags=["health"],
        response_model=None,
        responses={200: {"model": doc.Health}},
    )
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        summary="Readiness: every model with a champion has one loaded",
        tags=["health"],
        response_model=None,
        responses={200: {"model": doc.Ready}, 503: {"model": doc.Ready, "description": "Not ready yet"}},
    )
    async def readyz() -> Response:
        ready = server.ready()
        waiting = [
            n
            for n in server.manager.names()
            if (r := server.manager.routes(n)) is not None
            and r.champion is None
            and r.desired.champion is not None
        ]
        body: dict[str, Any] = {"ready": ready, "waiting": waiting}
        if server.features is not None and not server.features.online.ready:
            body["feast"] = server.features.online.error or "starting"
        return json_response(body, 200 if ready else 503)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        tags=["health"],
        response_model=None,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"}
        },
    )
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    admin_routes(app, server, spec)

    app.openapi_schema = None
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base_openapi()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
