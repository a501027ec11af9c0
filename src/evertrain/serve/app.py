"""The serving app: KServe V1 predict and feedback, model status, health, metrics, admin.

``create_app(store, spec)`` returns an ASGI app (FastAPI) that serves every registered
model (or the ones named). Replicas share nothing but the store and the logs: each
polls aliases and rollout shares from the store (``models.py``), answers with the
champion or the canary (``router.py``), mirrors to the shadow off the response path,
and hands every answered row to the background log writer (``evertrain.data.logs``).

Bad input never gets a 5xx: bodies are bounded (413), parsed by hand (422 for bad JSON,
``NaN`` included) and checked against the version's training schema (422 naming the
field and the value). A canary that fails on valid input is answered by the champion
instead and its failure is logged for the rollout analysis.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from evertrain import settings
from evertrain.data.logs import ERRORS, FEEDBACK, PREDICTIONS, LogWriter
from evertrain.exceptions import AuthError, EvertrainError, InputError, ServeError, UsageError
from evertrain.serve import openapi as doc
from evertrain.serve.metrics import ServeMetrics
from evertrain.serve.models import CANARY, CHAMPION, ModelManager, Routes
from evertrain.serve.router import KEY_HEADER, ShadowMirror, choose, error_rows, prediction_rows
from evertrain.spec import ServingSpec, Spec
from evertrain.store import Store
from evertrain.train.inputs import show, value_kind
from evertrain.train.predictor import LoadedModel, LoadOptions

log = logging.getLogger("evertrain.serve")

JSON = "application/json"
ADMIN_ACTOR = "admin-api"
RETRY_AFTER_SECONDS = "1"


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(value, allow_nan=False), status_code=status, media_type=JSON, headers=headers)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes) -> Any:
    """The JSON document in ``data``; refuses NaN and Infinity, which JSON does not have."""
    if not data.strip():
        raise InputError("body", "empty body: expected a JSON object")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise InputError("body", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise InputError("body", f"not valid JSON: {str(exc)[:200]}") from None


def _ids(value: Any, n: int, field: str) -> list[str]:
    if type(value) is not list:
        raise InputError(field, f"expected an array of strings, got {value_kind(value)} {show(value)}")
    if len(value) != n:
        raise InputError(field, f"expected one id per instance ({n}), got {len(value)}")
    for i, rid in enumerate(value):
        if type(rid) is not str or not rid or len(rid) > doc.MAX_ID_CHARS:
            raise InputError(
                f"{field}[{i}]", f"expected a string of 1-{doc.MAX_ID_CHARS} characters, got {show(rid)}"
            )
    if len(set(value)) != n:
        raise InputError(field, "request ids must be unique within a request")
    return value


class Server:
    """The state of one app: models, router, logs, metrics; the handlers' logic lives here."""

    def __init__(
        self,
        store: Store,
        spec: Spec | None,
        serving: ServingSpec,
        *,
        clock: Callable[[], float],
        admin_token: str | None,
        logs_url: str,
        only: Iterable[str] | None,
        metrics: ServeMetrics,
    ) -> None:
        self.store = store
        self.spec = spec
        self.serving = serving
        self.clock = clock
        self.admin_token = admin_token or None
        self.metrics = metrics
        self.max_batch = serving.max_batch
        self.max_body = serving.max_body_bytes
        self.logger = LogWriter(
            logs_url,
            batch_rows=serving.log.batch_rows,
            flush_seconds=serving.log.flush_seconds,
            queue_max=serving.log.queue_max,
            metrics=metrics,
        )
        self.manager = ModelManager(
            store,
            spec=None if spec is None else spec.model,
            rollout_spec=None if spec is None else spec.rollout,
            options=LoadOptions(serving.range_tolerance, serving.unknown_categories),
            poll_seconds=serving.poll_seconds,
            only=only,
            metrics=metrics,
            clock=clock,
        )
        self.mirror = ShadowMirror(
            self.logger, queue_max=serving.shadow_queue_max, metrics=metrics, clock=clock
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.logger.start()
        self.mirror.start()
        self.manager.start()

    def stop(self) -> None:
        """Stop polling, run queued shadow copies, then write every queued log row."""
        self.manager.stop()
        self.mirror.close()
        self.logger.close()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait for shadow copies to run and every queued row to be written (tests, analysis)."""
        self.mirror.join_idle(timeout)
        return self.logger.flush(timeout)

    # -- helpers ---------------------------------------------------------------------------

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise InputError(
                "body", f"{declared} bytes is more than the {self.max_body} accepted", http_status=413
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise InputError("body", f"more than the {self.max_body} bytes accepted", http_status=413)
                chunks.append(chunk)
        except ClientDisconnect:
            raise ServeError(400, "the client went away before sending its body") from None
        return b"".join(chunks)

    def routes(self, name: str) -> Routes:
        routes = self.manager.routes(name)
        if routes is None:
            raise ServeError(404, f"model {name!r} is not served here")
        return routes

    def check_admin(self, request: Request) -> None:
        if self.admin_token is None:
            raise AuthError(f"admin routes are off: start the server with {settings.ADMIN_TOKEN.name} set")
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.admin_token.encode()
        ):
            raise AuthError("admin routes need 'Authorization: Bearer <token>' with the server's admin token")

    async def admin_json(self, request: Request) -> dict[str, Any]:
        data = await self.body(request)
        if not data.strip():
            return {}
        payload = parse_json(data)
        if type(payload) is not dict:
            raise InputError("body", f"expected a JSON object, got {value_kind(payload)}")
        return payload

    # -- predict ---------------------------------------------------------------------------

    async def predict(self, name: str, request: Request) -> Response:
        started = time.perf_counter()
        routes = self.routes(name)
        try:
            response = await self._predict(name, routes, request)
        except InputError as exc:
            self.metrics.error(name, "too_large" if exc.http_status == 413 else "validation")
            raise
        self.metrics.request_latency.labels(name).observe(time.perf_counter() - started)
        return response

    async def _predict(self, name: str, routes: Routes, request: Request) -> Response:
        payload = parse_json(await self.body(request))
        if type(payload) is not dict:
            raise InputError("body", f"expected a JSON object with 'instances', got {value_kind(payload)}")
        instances = payload.get("instances")
        if type(instances) is not list:
            if instances is None and "instances" not in payload:
                raise InputError("instances", "missing field (expected an array of instances)")
            raise InputError("instances", f"expected an array of instances, got {value_kind(instances)}")
        n = len(instances)
        if n == 0:
            raise InputError("instances", "expected at least one instance")
        if n > self.max_batch:
            raise InputError(
                "instances", f"{n} instances is more than the {self.max_batch} accepted per request"
            )
        given_ids = payload.get("request_ids")
        ids = None if given_ids is None else _ids(given_ids, n, "request_ids")
        if routes.champion is None:
            raise ServeError(503, f"model {name!r} has no champion loaded yet")
        key = request.headers.get(KEY_HEADER) or (ids[0] if ids else None)
        arm, model = choose(routes, key)
        try:
            columns = model.schema.columns(instances)
        except InputError:
            if arm != CANARY:
                raise
            # The canary wants other inputs than the client sends: the champion answers.
            arm, model = CHAMPION, routes.champion
            columns = model.schema.columns(instances)
        if ids is None:
            ids = [uuid.uuid4().hex for _ in range(n)]
        ts = self.clock()
        start = time.perf_counter()
        try:
            predictions, scores = model.predict(columns)
        except Exception as exc:
            self._model_failed(model, arm, ids, ts, start, exc)
            if arm != CANARY:
                if isinstance(exc, ValueError | TypeError):
                    # Input the schema allows but the model cannot take (say, a null where the
                    # training data had one but the estimator has no imputer): the client's
                    # request cannot be served as sent, so a 4xx, counted and logged as an error.
                    raise InputError("instances", f"the model refused them: {str(exc)[:300]}") from None
                raise ServeError(
                    500, f"model {name!r} v{model.version} failed: {type(exc).__name__}"
                ) from None
            arm, model = CHAMPION, routes.champion
            columns = model.schema.columns(instances)
            start = time.perf_counter()
            predictions, scores = model.predict(columns)
        seconds = time.perf_counter() - start
        cols, types = prediction_rows(model, arm, columns, ids, predictions, scores, ts, seconds * 1000.0)
        self.logger.offer(PREDICTIONS, name, cols, types, n)
        if routes.shadow is not None:
            self.mirror.submit(routes.shadow, instances, ids, ts)
        self.metrics.answered(name, model.version_label, arm, n, seconds)
        return _json(
            {"predictions": predictions, "model_version": model.version_label, "request_ids": ids},
            headers={"x-evertrain-arm": arm},
        )

    def _model_failed(
        self, model: LoadedModel, arm: str, ids: list[str], ts: float, start: float, exc: Exception
    ) -> None:
        latency_ms = (time.perf_counter() - start) * 1000.0
        message = f"{type(exc).__name__}: {exc}"
        log.warning(
            "model %s v%s (%s) failed on %d instances: %s", model.name, model.version, arm, len(ids), message
        )
        cols, types = error_rows(model, arm, ids, ts, latency_ms, "model", message)
        self.logger.offer(ERRORS, model.name, cols, types, len(ids))
        self.metrics.error(model.name, "model", model.version_label, arm)

    # -- feedback --------------------------------------------------------------------------

    async def feedback(self, name: str, request: Request) -> Response:
        routes = self.routes(name)
        try:
            return await self._feedback(name, routes, request)
        except InputError as exc:
            self.metrics.error(name, "too_large" if exc.http_status == 413 else "feedback")
            raise

    async def _feedback(self, name: str, routes: Routes, request: Request) -> Response:
        payload = parse_json(await self.body(request))
        if type(payload) is not dict:
            raise InputError("body", f"expected a JSON object with 'labels', got {value_kind(payload)}")
        labels = payload.get("labels")
        if type(labels) is not list:
            if "labels" not in payload:
                raise InputError("labels", "missing field (expected an array of {request_id, label})")
            raise InputError(
                "labels", f"expected an array of {{request_id, label}}, got {value_kind(labels)}"
            )
        if not labels:
            raise InputError("labels", "expected at least one label")
        if len(labels) > self.max_batch:
            raise InputError(
                "labels", f"{len(labels)} labels is more than the {self.max_batch} accepted per request"
            )
        champion = routes.champion
        as_text = champion.prediction_type == "string" if champion is not None else None
        ids: list[str] = []
        values: list[Any] = []
        for i, item in enumerate(labels):
            if type(item) is not dict:
                raise InputError(
                    f"labels[{i}]", f"expected an object {{request_id, label}}, got {value_kind(item)}"
                )
            rid = item.get("request_id")
            if type(rid) is not str or not rid or len(rid) > doc.MAX_ID_CHARS:
                raise InputError(
                    f"labels[{i}].request_id",
                    f"expected a string of 1-{doc.MAX_ID_CHARS} characters, got {show(rid)}",
                )
            label = item.get("label")
            values.append(self._label(label, i, as_text))
            ids.append(rid)
        if as_text is None:
            as_text = any(type(v) is str for v in values)
        ts = self.clock()
        cols = {"request_id": ids, "label": values, "ts": [ts] * len(ids)}
        types = {"request_id": "string", "label": "string" if as_text else "float64", "ts": "float64"}
        if not self.logger.offer(FEEDBACK, name, cols, types, len(ids)):
            raise ServeError(503, "the feedback log queue is full; retry shortly")
        return _json({"accepted": len(ids)})

    @staticmethod
    def _label(label: Any, index: int, as_text: bool | None) -> Any:
        field = f"labels[{index}].label"
        if label is None or type(label) in (list, dict):
            raise InputError(
                field, f"expected a number, string or boolean, got {value_kind(label)} {show(label)}"
            )
        if (type(label) is float and label != label) or (
            type(label) is float and label in (float("inf"), float("-inf"))
        ):
            raise InputError(field, f"number {show(label)} is not finite")
        if type(label) is str and len(label) > doc.MAX_ID_CHARS:
            raise InputError(field, f"a label of {len(label)} characters is longer than {doc.MAX_ID_CHARS}")
        if as_text is False and type(label) is str:
            raise InputError(
                field, f"expected a number (the model predicts numbers), got string {show(label)}"
            )
        if as_text is False and type(label) is int:
            try:
                return float(label)
            except OverflowError:
                raise InputError(field, f"number {show(label)} is too large") from None
        if type(label) is bool and as_text is not True:
            return float(label)
        return label

    # -- status ----------------------------------------------------------------------------

    def model_status(self, name: str) -> dict[str, Any]:
        routes = self.routes(name)
        champion = routes.champion
        desired = routes.desired
        errors = {
            str(v): e
            for v in (desired.champion, desired.canary, desired.shadow)
            if (e := self.manager.load_error(name, v)) is not None
        }
        return {
            "name": name,
            "ready": champion is not None,
            "versions": {"champion": desired.champion, "canary": desired.canary, "shadow": desired.shadow},
            "serving": routes.versions,
            "canary_share": routes.share,
            "task": None if champion is None else champion.task,
            "inputs": {} if champion is None else champion.schema.describe(),
            "load_errors": errors,
        }


def create_app(
    store: Store,
    spec: Spec | None = None,
    *,
    serving: ServingSpec | None = None,
    clock: Callable[[], float] = time.time,
    admin_token: str | None = None,
    logs_url: str | None = None,
    models: Iterable[str] | None = None,
    metrics: ServeMetrics | None = None,
) -> FastAPI:
    """The serving app over ``store``.

    ``spec`` (optional) gives the serving settings, the rollout plan and the model's
    task, features and trusted types; without it every registered model is served with
    default settings. ``serving`` overrides ``spec.serving``. ``admin_token`` defaults to
    ``EVERTRAIN_ADMIN_TOKEN`` (unset: admin routes answer 401). ``logs_url`` defaults to
    the store's. ``models`` limits serving to those names. Background threads start and
    stop with the app's lifespan (``app.state.server.start()``/``stop()`` without one).
    """
    serving = serving or (spec.serving if spec is not None else ServingSpec.model_validate({}))
    url = logs_url or store.logs_url
    if not url:
        raise UsageError("the serving app needs a logs URL: pass logs_url or open the store with one")
    token = admin_token if admin_token is not None else settings.ADMIN_TOKEN.raw()
    server = Server(
        store,
        spec,
        serving,
        clock=clock,
        admin_token=token,
        logs_url=url,
        only=models,
        metrics=metrics or ServeMetrics(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(server.start)
        try:
            yield
        finally:
            await run_in_threadpool(server.stop)

    app = FastAPI(
        title="evertrain serving",
        version="1",
        description="KServe V1 predict and feedback, model status, health, Prometheus metrics, admin routes.",
        lifespan=lifespan,
    )
    app.state.server = server
    _handlers(app, server)
    _routes(app, server, spec)
    return app


def _error_response(status: int, message: str, field: str | None = None) -> Response:
    headers = None
    if status == 401:
        headers = {"www-authenticate": "Bearer"}
    elif status == 503:
        headers = {"retry-after": RETRY_AFTER_SECONDS}
    return _json({"error": message, "field": field}, status, headers)


def _handlers(app: FastAPI, server: Server) -> None:
    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> Response:
        return _error_response(exc.http_status, exc.message, exc.field)

    @app.exception_handler(ServeError)
    async def _serve(_: Request, exc: ServeError) -> Response:
        return _error_response(exc.http_status, exc.message, exc.field)

    @app.exception_handler(EvertrainError)
    async def _evertrain(_: Request, exc: EvertrainError) -> Response:
        return _error_response(exc.http_status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(422, f"{where}: {first.get('msg', 'invalid')}", where or None)


def _routes(app: FastAPI, server: Server, spec: Spec | None) -> None:
    from evertrain.rollout import steps

    max_batch = server.max_batch

    @app.post(
        "/v1/models/{name}:predict",
        summary="Predict (KServe V1)",
        tags=["inference"],
        response_model=None,
        responses={200: {"model": doc.PredictResponse}, **doc.errors(404, 413, 422, 500, 503)},
        openapi_extra=doc.body(doc.predict_request(max_batch)),
    )
    async def predict(name: str, request: Request) -> Response:
        return await server.predict(name, request)

    @app.post(
        "/v1/models/{name}:feedback",
        summary="Feedback labels for earlier predictions, by request id",
        tags=["inference"],
        response_model=None,
        responses={200: {"model": doc.FeedbackResponse}, **doc.errors(404, 413, 422, 503)},
        openapi_extra=doc.body(doc.feedback_request(max_batch)),
    )
    async def feedback(name: str, request: Request) -> Response:
        return await server.feedback(name, request)

    @app.get(
        "/v1/models/{name}",
        summary="Model status: versions, readiness and inputs",
        tags=["inference"],
        response_model=None,
        responses={200: {"model": doc.ModelStatus}, **doc.errors(404)},
    )
    async def model_status(name: str) -> Response:
        return _json(server.model_status(name))

    @app.get(
        "/healthz",
        summary="Liveness",
        tags=["health"],
        response_model=None,
        responses={200: {"model": doc.Health}},
    )
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get(
        "/readyz",
        summary="Readiness: every model with a champion has one loaded",
        tags=["health"],
        response_model=None,
        responses={200: {"model": doc.Ready}, 503: {"model": doc.Ready, "description": "Not ready yet"}},
    )
    async def readyz() -> Response:
        ready = server.manager.ready()
        waiting = [
            n
            for n in server.manager.names()
            if (r := server.manager.routes(n)) is not None
            and r.champion is None
            and r.desired.champion is not None
        ]
        return _json({"ready": ready, "waiting": waiting}, 200 if ready else 503)

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

    # -- admin ---------------------------------------------------------------------------

    def _rollout_spec(name: str) -> Any:
        return spec.rollout if spec is not None and spec.model.name == name else None

    @app.post(
        "/admin/models/{name}/promote",
        summary="Make a version the champion (compare-and-swap)",
        tags=["admin"],
        response_model=None,
        responses={200: {"model": doc.AdminResult}, **doc.errors(400, 401, 404, 409, 413, 422)},
        openapi_extra={**doc.body(doc.PROMOTE_REQUEST), "security": [{"bearer": []}]},
    )
    async def promote(name: str, request: Request) -> Response:
        server.check_admin(request)
        payload = await server.admin_json(request)
        if "version" not in payload:
            raise InputError("version", "missing field (expected the version to promote)")
        reason = _text(payload.get("reason"), "reason")
        version = _version(payload["version"], "version")
        expected = payload.get("expected")
        expected = None if expected is None else _version(expected, "expected")
        result = await run_in_threadpool(
            lambda: steps.promote_now(
                server.store, name, version, actor=ADMIN_ACTOR, reason=reason, expected=expected
            )
        )
        await run_in_threadpool(server.manager.refresh, retry_failed=True)
        return _json({"model": name, "action": "promote", **result})

    @app.post(
        "/admin/models/{name}/rollback",
        summary="Undo the newest change: abort the active rollout, else move the champion back",
        tags=["admin"],
        response_model=None,
        responses={200: {"model": doc.AdminResult}, **doc.errors(400, 401, 404, 409, 413, 422)},
        openapi_extra={**doc.body(doc.ROLLBACK_REQUEST, required=False), "security": [{"bearer": []}]},
    )
    async def rollback(name: str, request: Request) -> Response:
        server.check_admin(request)
        payload = await server.admin_json(request)
        reason = _text(payload.get("reason"), "reason")
        scope = payload.get("scope", "auto")
        if scope not in ("auto", "champion", "rollout"):
            raise InputError("scope", f"expected auto, champion or rollout, got {show(scope)}")
        result = await run_in_threadpool(
            steps.rollback_now, server.store, name, actor=ADMIN_ACTOR, reason=reason, scope=scope
        )
        await run_in_threadpool(server.manager.refresh, retry_failed=True)
        return _json({"model": name, **result})

    @app.get(
        "/admin/models/{name}/rollout",
        summary="The active rollout and the recent ones",
        tags=["admin"],
        response_model=None,
        responses={200: {"model": doc.RolloutStatus}, **doc.errors(400, 401, 404)},
        openapi_extra={"security": [{"bearer": []}]},
    )
    async def rollout_status(name: str, request: Request) -> Response:
        server.check_admin(request)
        active, history = await run_in_threadpool(steps.rollout_status, server.store, name)
        return _json({"model": name, "active": active, "history": history})

    @app.post(
        "/admin/models/{name}/rollout",
        summary="Start a rollout of a version (shadow, then canary steps, from the spec)",
        tags=["admin"],
        response_model=None,
        responses={200: {"model": doc.AdminResult}, **doc.errors(400, 401, 404, 409, 413, 422)},
        openapi_extra={**doc.body(doc.START_ROLLOUT_REQUEST), "security": [{"bearer": []}]},
    )
    async def rollout_start(name: str, request: Request) -> Response:
        server.check_admin(request)
        payload = await server.admin_json(request)
        if "version" not in payload:
            raise InputError("version", "missing field (expected the version to roll out)")
        reason = _text(payload.get("reason"), "reason")
        version = _version(payload["version"], "version")
        started = await run_in_threadpool(
            lambda: steps.start_rollout(
                server.store,
                name,
                version,
                rollout_spec=_rollout_spec(name),
                actor=ADMIN_ACTOR,
                reason=reason,
            )
        )
        await run_in_threadpool(server.manager.refresh, retry_failed=True)
        return _json({"model": name, "action": "start_rollout", "rollout": started.to_dict()})

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


MAX_VERSION = doc.MAX_VERSION  # what the registry's parser takes as a string; fits any SQL integer


def _version(value: Any, field: str) -> int:
    if type(value) is int and 1 <= value <= MAX_VERSION:
        return value
    if (
        type(value) is str
        and value.isascii()
        and value.isdigit()
        and 1 <= len(value) <= 9
        and int(value) >= 1
    ):
        return int(value)
    raise InputError(field, f"expected a version number from 1 to {MAX_VERSION}, got {show(value)}")


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise InputError(field, f"expected a string, got {value_kind(value)} {show(value)}")
    return value
