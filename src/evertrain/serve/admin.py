"""The admin routes: promote, roll back, start a rollout and read its status.

Each needs the server's admin token as a bearer token (``Server.check_admin``), runs
the command from :mod:`evertrain.rollout.commands` that the controller runs too, audited
under the actor ``admin-api``, and then refreshes this replica's routes at once; the
other replicas see the change at their next poll.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from evertrain.exceptions import InputError
from evertrain.serve import openapi as doc
from evertrain.serve.bodies import json_response, text_field, version_field
from evertrain.serve.server import Server
from evertrain.spec import Spec
from evertrain.store.names import CHAMPION
from evertrain.train.inputs import show

ADMIN_ACTOR = "admin-api"


def admin_routes(app: FastAPI, server: Server, spec: Spec | None) -> None:
    """Add the admin routes to ``app``; ``spec`` gives the rollout plan of its model."""
    from evertrain.rollout import commands, state

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
        reason = text_field(payload.get("reason"), "reason")
        version = version_field(payload["version"], "version")
        expected = payload.get("expected")
        expected = None if expected is None else version_field(expected, "expected")
        result = await run_in_threadpool(
            lambda: commands.promote_now(
                server.store, name, version, actor=ADMIN_ACTOR, reason=reason, expected=expected
            )
        )
        await run_in_threadpool(server.manager.refresh, retry_failed=True)
        return json_response({"model": name, "action": "promote", **result})

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
        reason = text_field(payload.get("reason"), "reason")
        scope = payload.get("scope", "auto")
        if scope not in ("auto", CHAMPION, "rollout"):
            raise InputError("scope", f"expected auto, champion or rollout, got {show(scope)}")
        result = await run_in_threadpool(
            commands.rollback_now, server.store, name, actor=ADMIN_ACTOR, reason=reason, scope=scope
        )
        await run_in_threadpool(server.manager.refresh, retry_failed=True)
        return json_response({"model": name, **result})

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
        active, history = await run_in_threadpool(state.rollout_status, server.store, name)
        return json_response({"model": name, "active": active, "history": history})

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
        reason = text_field(payload.get("reason"), "reason")
        version = version_field(payload["version"], "version")
        started = await run_in_threadpool(
            lambda: commands.start_rollout(
                server.store,
                name,
                version,
                rollout_spec=_rollout_spec(name),
                actor=ADMIN_ACTOR,
                reason=reason,
            )
        )
        await run_in_threadpool(server.manager.refresh, retry_failed=True)
        return json_response({"model": name, "action": "start_rollout", "rollout": started.to_dict()})
