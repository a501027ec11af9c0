"""The state of one serving app and the logic of its handlers: predict, feedback, status.

A :class:`Server` holds what a replica has: the models it serves (``models.py``), the
shadow mirror (``router.py``), the background log writer (``evertrain.data.logs``) and
the metrics. Requests read one immutable set of routes and use it to the end. A canary
that fails on valid input is answered by the champion instead and its failure is
logged for the rollout analysis. The routes that call it are wired in ``app.py``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from evertrain import settings
from evertrain.data.logs import ERRORS, FEEDBACK, PREDICTIONS, LogWriter
from evertrain.exceptions import AuthError, InputError, ServeError
from evertrain.serve import openapi as doc
from evertrain.serve.bodies import (
    feedback_label,
    json_response,
    parse_json,
    predict_parameters,
    request_ids,
)
from evertrain.serve.known_ids import KnownIds
from evertrain.serve.metrics import ServeMetrics
from evertrain.serve.models import ModelManager, Routes
from evertrain.serve.router import KEY_HEADER, ShadowMirror, choose, error_rows, prediction_rows
from evertrain.spec import ServingSpec, Spec
from evertrain.store import Store
from evertrain.store.names import CANARY, CHAMPION, SHADOW
from evertrain.train.inputs import show, value_kind
from evertrain.train.predictor import LoadedModel, LoadOptions

log = logging.getLogger("evertrain.serve")


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
        self.known_ids = KnownIds(logs_url)
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
        ids = None if given_ids is None else request_ids(given_ids, n, "request_ids")
        wanted = predict_parameters(payload.get("parameters"))
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
        self.known_ids.add(name, ids)
        answer: dict[str, Any] = {
            "predictions": predictions,
            "model_version": model.version_label,
            "request_ids": ids,
        }
        if wanted != "predictions":
            answer.update(self._extra_outputs(model, columns, scores, wanted))
        return json_response(answer, headers={"x-evertrain-arm": arm})

    @staticmethod
    def _extra_outputs(
        model: LoadedModel, columns: dict[str, list[Any]], scores: list[float] | None, wanted: str
    ) -> dict[str, Any]:
        """``parameters.return``: class probabilities (with the class order) or one score per instance.

        A score is the positive class's probability for a binary classifier, and the
        predicted class's probability for a multiclass one; a regressor has neither.
        """
        if model.task == "regression" or not hasattr(model.estimator, "predict_proba"):
            raise InputError(
                "parameters.return",
                f"model {model.name!r} v{model.version} is a {model.task} model: it has no {wanted}",
            )
        if wanted == "scores" and scores is not None:
            return {"scores": scores}
        classes, matrix = model.probabilities(columns, scores)
        if wanted == "scores":
            return {"scores": [max(row) for row in matrix]}
        return {"classes": classes, "probabilities": matrix}

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
            values.append(feedback_label(label, i, as_text))
            ids.append(rid)
        if as_text is None:
            as_text = any(type(v) is str for v in values)
        ts = self.clock()
        cols = {"request_id": ids, "label": values, "ts": [ts] * len(ids)}
        types = {"request_id": "string", "label": "string" if as_text else "float64", "ts": "float64"}
        if not self.logger.offer(FEEDBACK, name, cols, types, len(ids)):
            raise ServeError(503, "the feedback log queue is full; retry shortly")
        unknown = await asyncio.to_thread(self.known_ids.unknown, name, list(dict.fromkeys(ids)))
        if unknown:
            self.metrics.unknown_feedback_ids.labels(name).inc(len(unknown))
        return json_response({"accepted": len(ids), "unknown_request_ids": unknown})

    # -- status ----------------------------------------------------------------------------

    def list_models(self) -> dict[str, Any]:
        """``GET /v1/models``: the names served (KServe V1), with readiness and aliases of each."""
        names = sorted(self.manager.names())
        ready = {}
        versions = {}
        for name in names:
            routes = self.manager.routes(name)
            ready[name] = routes is not None and routes.champion is not None
            desired = None if routes is None else routes.desired
            versions[name] = {
                CHAMPION: None if desired is None else desired.champion,
                CANARY: None if desired is None else desired.canary,
                SHADOW: None if desired is None else desired.shadow,
            }
        return {"models": names, "ready": ready, "versions": versions}

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
            "versions": {CHAMPION: desired.champion, CANARY: desired.canary, SHADOW: desired.shadow},
            "serving": routes.versions,
            "canary_share": routes.share,
            "task": None if champion is None else champion.task,
            "inputs": {} if champion is None else champion.schema.describe(),
            "load_errors": errors,
        }
