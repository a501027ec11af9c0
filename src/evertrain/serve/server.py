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
import re
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from evertrain import settings
from evertrain.data.logs import ERRORS, FEEDBACK, PREDICTIONS, LogWriter
from evertrain.exceptions import AuthError, InputError, ServeError
from evertrain.serve import openapi as doc
from evertrain.serve.batching import Batches, Ticket
from evertrain.serve.bodies import json_response, parse_feedback, parse_json, parse_predict
from evertrain.serve.known_ids import KnownIds
from evertrain.serve.labels import LabelRule, label_rule, rule_from_model
from evertrain.serve.metrics import ServeMetrics
from evertrain.serve.models import ModelManager, Routes
from evertrain.serve.router import (
    KEY_HEADER,
    ShadowMirror,
    choose,
    error_rows,
    prediction_rows,
    routing_secret,
)
from evertrain.spec import ServingSpec, Spec
from evertrain.store import Store
from evertrain.store.names import CANARY, CHAMPION, SHADOW
from evertrain.train.inputs import show, value_kind
from evertrain.train.predictor import LoadedModel, LoadOptions

if TYPE_CHECKING:
    from evertrain.serve.features import EntityFeatures

log = logging.getLogger("evertrain.serve")

#: Exceptions a model raises on input it cannot take (a value its encoder never saw, a
#: shape it refuses): the request's fault, answered 422, counted against no arm. Anything
#: else a model raises is its own failure (500, or the champion answers a canary's request).
INPUT_FAILURES: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError, UnicodeError)

JSON_TYPES = ("application/json",)
_PATH = re.compile(r"""(?:[A-Za-z][A-Za-z0-9+.-]*://[^\s'"]+|(?<![\w.])/(?:[^\s'"/]+/)+[^\s'",)]*)""")


def check_generation_limit(champion: LoadedModel, limit: int) -> None:
    """Refuse (422) ``parameters.max_new_tokens`` for a model that generates nothing, or above
    the champion's own limit (``lora.max_new_tokens``): a request may shorten answers, not lengthen them."""
    if champion.max_new_tokens is None:
        raise InputError(
            "parameters.max_new_tokens",
            f"model {champion.name!r} v{champion.version} is a {champion.task} model: it generates no text",
        )
    if limit > champion.max_new_tokens:
        raise InputError(
            "parameters.max_new_tokens",
            f"{limit} is more than the {champion.max_new_tokens} tokens this model answers with at most",
        )


def public_message(message: str) -> str:
    """``message`` with every absolute path and URL replaced by ``<path>``, for public answers.

    >>> public_message("IntegrityError: artifact /srv/p/.evertrain/artifacts/ab/cd changed")
    'IntegrityError: artifact <path> changed'
    """
    return _PATH.sub("<path>", message)


def entity_features(spec: Spec | None, project: Path | None) -> EntityFeatures | None:
    """What serving does with entity keys, for a project that reads Feast; ``None`` for one that does not."""
    feast = None if spec is None else spec.feast_serving()
    if feast is None:
        return None
    from evertrain.data.feast_online import online_features
    from evertrain.serve.features import EntityFeatures  # only projects with Feast pay for it

    return EntityFeatures(online_features(feast, project), fetch=feast.online, timeout=feast.timeout_seconds)


class BodyBudget:
    """Bytes of request bodies held by all requests together, bounded; shared by one app."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


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
        feedback_token: str | None = None,
        logs_url: str,
        only: Iterable[str] | None,
        metrics: ServeMetrics,
        project: Path | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.serving = serving
        self.clock = clock
        self.admin_token = admin_token or None
        self.feedback_token = feedback_token or None
        self.routing_secret = routing_secret(settings.ROUTING_SECRET.raw(), self.admin_token)
        self.inflight = BodyBudget(serving.max_body_bytes_in_flight)
        self._label_rules: dict[tuple[str, int], LabelRule | None] = {}
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
            self.logger,
            queue_max=serving.shadow_queue_max,
            metrics=metrics,
            clock=clock,
            max_rows=serving.batching.max_rows if serving.batching.enabled else 1,
        )
        self._batches: dict[str, Batches] = {}
        self.features = entity_features(spec, project)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.logger.start()
        self.mirror.start()
        self.manager.start()
        if self.features is not None:
            self.features.start()

    def ready(self) -> bool:
        """Every champion loaded, and Feast's online reader running where the project reads Feast."""
        return self.manager.ready() and (self.features is None or self.features.online.ready)

    def stop(self) -> None:
        """Stop polling, run queued shadow copies, then write every queued log row."""
        self.manager.stop()
        self.mirror.close()
        self.logger.close()
        if self.features is not None:
            self.features.close()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait for shadow copies to run and every queued row to be written (tests, analysis)."""
        self.mirror.join_idle(timeout)
        return self.logger.flush(timeout)

    # -- helpers ---------------------------------------------------------------------------

    async def body(self, request: Request) -> bytes:
        """The request body, bounded in size, in time and in the bytes all requests hold together.

        413 past ``max_body_bytes``; 408 when it has not arrived whole within
        ``body_timeout_seconds`` (a slow sender holds nothing for long); 429 when taking it
        would pass ``max_body_bytes_in_flight`` (many large bodies at once cannot exhaust
        memory, and small requests still get in).
        """
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise InputError(
                "body", f"{declared} bytes is more than the {self.max_body} accepted", http_status=413
            )
        try:
            # asyncio.timeout, not wait_for: no task made per request
            async with asyncio.timeout(self.serving.body_timeout_seconds):
                return await self._read(request, declared)
        except TimeoutError:
            self.metrics.refused.labels("body_timeout").inc()
            raise ServeError(
                408, f"the body did not arrive within {self.serving.body_timeout_seconds:g} s"
            ) from None
        finally:
            self.inflight.give(getattr(request.state, "body_bytes_held", 0))
            request.state.body_bytes_held = 0

    async def _read(self, request: Request, declared: str | None) -> bytes:
        size = 0
        held = 0

        def hold(n: int) -> None:
            nonlocal held
            if not self.inflight.take(n):
                self.metrics.refused.labels("overloaded").inc()
                # 429, not 503: it is the clients' bodies in flight that are too many, and a
                # client sending a small body still gets in (only what it announces is reserved).
                raise ServeError(429, "the server holds too many request bodies now; retry shortly")
            held += n
            request.state.body_bytes_held = held

        if declared is not None and declared.isdigit():
            hold(int(declared))  # reserve what is announced before reading any of it
        chunks: list[bytes] = []
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise InputError("body", f"more than the {self.max_body} bytes accepted", http_status=413)
                if size > held:
                    hold(size - held)
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

    def batches(self, name: str) -> Batches:
        """The batches gathering for model ``name`` (made on its first request)."""
        batches = self._batches.get(name)
        if batches is None:
            batches = self._batches[name] = Batches(name, self.serving.batching, self.metrics)
        return batches

    async def predict(self, name: str, request: Request) -> Response:
        started = time.perf_counter()
        routes = self.routes(name)
        batches = self.batches(name)
        ticket = batches.arrive()
        try:
            response = await self._predict(name, routes, request, batches, ticket)
        except InputError as exc:
            self.metrics.error(name, "too_large" if exc.http_status == 413 else "validation")
            raise
        finally:
            batches.leave(ticket)
        self.metrics.request_latency.labels(name).observe(time.perf_counter() - started)
        return response

    async def _predict(
        self, name: str, routes: Routes, request: Request, batches: Batches, ticket: Ticket
    ) -> Response:
        body = parse_predict(await self.body(request), self.max_batch)
        instances, ids, wanted = body.instances, body.ids, body.wanted
        n = len(instances)
        if routes.champion is None:
            raise ServeError(503, f"model {name!r} has no champion loaded yet")
        limit = body.max_new_tokens
        if limit is not None:
            check_generation_limit(routes.champion, limit)
        keys: dict[str, list[Any]] = {}
        key_types: dict[str, str] = {}
        if self.features is not None:
            instances, keys = await self.features.fill(instances)
            key_types = self.features.keys
        key = None
        if self.serving.client_routing_key:
            key = request.headers.get(KEY_HEADER) or (ids[0] if ids else None)
        arm, model = choose(routes, key, secret=self.routing_secret)
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
        arm, model, columns, predictions, scores, seconds = await self.answer(
            name, routes, arm, model, columns, instances, ids, ts, batches, ticket, limit
        )
        cols, types = prediction_rows(model, arm, columns, ids, predictions, scores, ts, seconds * 1000.0)
        for key, values in keys.items():
            if key not in cols:  # an entity key the model does not read is logged all the same
                cols[key] = values
                types[key] = key_types[key]
        self.logger.offer(PREDICTIONS, name, cols, types, n)
        if routes.shadow is not None:
            self.mirror.submit(routes.shadow, instances, ids, ts)
        self.metrics.answered(name, model.version_label, arm, n, seconds)
        self.known_ids.add(name, ids)
        reply: dict[str, Any] = {
            "predictions": predictions,
            "model_version": model.version_label,
            "request_ids": ids,
        }
        if wanted != "predictions":
            reply.update(self._extra_outputs(model, columns, scores, wanted))
        return json_response(reply, headers={"x-evertrain-arm": arm})

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

    async def answer(
        self,
        name: str,
        routes: Routes,
        arm: str,
        model: LoadedModel,
        columns: dict[str, list[Any]],
        instances: list[Any],
        ids: list[str],
        ts: float,
        batches: Batches,
        ticket: Ticket,
        limit: int | None = None,
    ) -> tuple[str, LoadedModel, dict[str, list[Any]], list[Any], list[float] | None, float]:
        """Predict with ``model`` (in a batch with the requests to it that arrive together); on its
        failure, judge whose failure it is (one handler, both arms).

        * The canary fails and the champion answers the same input: the canary's own
          failure, logged against it (the rollout analysis counts it); the champion answers.
        * Both fail on the same input: the input is at fault, whichever arm the client
          reached, so no arm is charged; the champion's failure gives the status.
        * The champion fails: a ValueError-like refusal of input that passed the schema is
          the client's (422, charged to no arm); anything else is the champion's own (500,
          logged against it).
        """
        start = time.perf_counter()
        try:
            (predictions, scores), seconds = await batches.predict(model, columns, len(ids), ticket, limit)
            return arm, model, columns, predictions, scores, seconds
        except Exception as exc:
            failure: Exception = exc
        failed_ms = (time.perf_counter() - start) * 1000.0
        champion = routes.champion
        if arm == CANARY and champion is not None:
            start = time.perf_counter()
            try:
                champion_columns = champion.schema.columns(instances)
                predictions, scores = (
                    champion.predict(champion_columns)
                    if limit is None
                    else champion.predict(champion_columns, limit)
                )
            except Exception as exc:
                self._refuse(name, champion, ids, ts, start, exc, also=(model, failure))
            seconds = time.perf_counter() - start
            self._model_failed(model, CANARY, ids, ts, failed_ms, failure)
            return CHAMPION, champion, champion_columns, predictions, scores, seconds
        self._refuse(name, model, ids, ts, start, failure)

    def _refuse(
        self,
        name: str,
        model: LoadedModel,
        ids: list[str],
        ts: float,
        start: float,
        exc: Exception,
        also: tuple[LoadedModel, Exception] | None = None,
    ) -> NoReturn:
        """Answer a request the champion could not: 422 when the input is at fault, else 500."""
        if isinstance(exc, (InputError, *INPUT_FAILURES)):
            other = "" if also is None else f" (the canary v{also[0].version} failed on it too)"
            log.info("model %s v%s refused %d instances%s: %s", name, model.version, len(ids), other, exc)
            if isinstance(exc, InputError):
                raise exc
            raise InputError(
                "instances", f"the model cannot take them: {type(exc).__name__}: {str(exc)[:300]}"
            ) from None
        self._model_failed(model, CHAMPION, ids, ts, (time.perf_counter() - start) * 1000.0, exc)
        raise ServeError(500, f"model {name!r} v{model.version} failed: {type(exc).__name__}") from None

    def _model_failed(
        self, model: LoadedModel, arm: str, ids: list[str], ts: float, latency_ms: float, exc: Exception
    ) -> None:
        """Log a failure that is the model's own: the rollout analysis counts it against ``arm``."""
        message = public_message(f"{type(exc).__name__}: {exc}")
        log.warning(
            "model %s v%s (%s) failed on %d instances: %s", model.name, model.version, arm, len(ids), message
        )
        cols, types = error_rows(model, arm, ids, ts, latency_ms, "model", message)
        self.logger.offer(ERRORS, model.name, cols, types, len(ids))
        self.metrics.error(model.name, "model", model.version_label, arm)

    # -- feedback --------------------------------------------------------------------------

    async def feedback(self, name: str, request: Request) -> Response:
        routes = self.routes(name)
        self.check_feedback(request)
        try:
            return await self._feedback(name, routes, request)
        except InputError as exc:
            self.metrics.error(name, "too_large" if exc.http_status == 413 else "feedback")
            raise

    def check_feedback(self, request: Request) -> None:
        """The feedback route's own door: its token (when set) and a JSON body only.

        JSON only (415 otherwise) because a web page can make a browser send ``text/plain``
        or a form to any address without asking (a CORS simple request), but never
        ``application/json``: so no page a user opens can post labels in their name.
        """
        if self.feedback_token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.feedback_token.encode()
            ):
                self.metrics.refused.labels("feedback_auth").inc()
                raise AuthError(
                    "feedback needs 'Authorization: Bearer <token>' with the server's feedback token "
                    f"({settings.FEEDBACK_TOKEN.name})"
                )
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media not in JSON_TYPES:
            self.metrics.refused.labels("content_type").inc()
            raise ServeError(
                415, f"feedback takes a JSON body (Content-Type: application/json), got {media or 'none'!r}"
            )

    async def label_rule(self, name: str, routes: Routes) -> LabelRule:
        """The rule labels of ``name`` follow, from the spec and the champion's snapshot (cached)."""
        version = routes.desired.champion
        if version is None:
            raise ServeError(503, f"model {name!r} has no champion yet: its labels cannot be typed")
        key = (name, version)
        if key not in self._label_rules:
            self._label_rules[key] = await run_in_threadpool(label_rule, self.store, self.spec, name, version)
        rule = self._label_rules[key]
        if rule is not None:
            return rule
        champion = routes.champion
        if champion is None or champion.version != version:
            raise ServeError(
                503,
                f"model {name!r}: no spec describes it and v{version} is not loaded yet to type its labels",
            )
        return rule_from_model(champion)

    async def _feedback(self, name: str, routes: Routes, request: Request) -> Response:
        labels = parse_feedback(await self.body(request), self.max_batch)
        rule = await self.label_rule(name, routes)
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
            values.append(rule.check(item.get("label"), i))
            ids.append(rid)
        ts = self.clock()
        cols = {"request_id": ids, "label": values, "ts": [ts] * len(ids)}
        types = {"request_id": "string", "label": rule.log_type, "ts": "float64"}
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
        errors = {v: public_message(e) for v, e in errors.items()}
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
