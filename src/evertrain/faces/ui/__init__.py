"""The dashboard: one page per store, served by the same ASGI app as the model server.

Shows every model with its aliases, rollout state, last decision, accuracy and drift over
time, and the audit trail. When the server has an admin token, the page and its state
need it too (the audit trail and the decisions are not for anyone who can reach the
port): as a bearer token, or as the password of HTTP Basic auth, which a browser asks for
by itself (any user name). The promote and rollback buttons call the admin routes, which
need the admin token (the page asks for it and never stores it).

The page reads the store in a worker thread, never on the event loop: the same loop
answers predict requests, and a dashboard being loaded must not slow them down.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from evertrain.faces import report_html
from evertrain.faces.status import status_data
from evertrain.store import Store

REFRESH_SECONDS = 10


def state(store: Store) -> dict[str, Any]:
    return status_data(store)


def _model_section(store: Store, entry: dict[str, Any]) -> str:
    name = entry["name"]
    data = report_html.collect(store, name)
    aliases = entry["aliases"]
    decision = entry.get("last_decision") or {}
    rollout = entry.get("rollout") or {}
    alias_cells = "".join(
        f'<td data-alias="{a}">{"v" + str(v) if v else "-"}</td>' for a, v in aliases.items()
    )
    reasons = "; ".join(decision.get("reasons", [])) if decision else ""
    return f"""
<section class="model" data-model="{html.escape(name)}">
<h2>{html.escape(name)}</h2>
<table><thead><tr>{"".join(f"<th>{html.escape(a)}</th>" for a in aliases)}<th>versions</th></tr></thead>
<tbody><tr>{alias_cells}<td>{entry.get("n_versions", 0)}</td></tr></tbody></table>
<p class="decision"><b>Last decision:</b> <span id="last-decision-{html.escape(name)}">{
        html.escape(decision.get("action", "none yet")) if decision else "none yet"
    }</span>
{f"<span class='reasons'> ({html.escape(reasons)})</span>" if reasons else ""}</p>
<p class="rollout"><b>Rollout:</b> {html.escape(str(rollout.get("state", "idle")) if rollout else "idle")}</p>
{report_html.accuracy_chart(data)}
{report_html.drift_chart(data)}
<details><summary>Audit trail ({len(data["audit"])} entries)</summary>
{
        report_html.html_table(
            ["seq", "when", "actor", "action", "subject", "reason"],
            [
                [
                    e["seq"],
                    report_html.format_time(e["at"]),
                    e["actor"],
                    e["action"],
                    e["subject"],
                    e["reason"] or "",
                ]
                for e in data["audit"][-50:]
            ],
        )
    }
</details>
<form class="admin" onsubmit="return adminAction(event, '{html.escape(name)}')">
<input name="version" placeholder="version" size="6"> <button value="promote">Promote</button>
<button value="rollback">Roll back</button> <span class="result"></span></form>
</section>"""


SCRIPT = """
async function adminAction(event, model) {
  event.preventDefault();
  const form = event.target, action = event.submitter.value;
  const token = window.prompt('Admin token (not stored):');
  if (!token) return false;
  const body = action === 'promote' ? {version: form.version.value} : {};
  const r = await fetch(`/admin/models/${model}/${action}`, {method: 'POST',
    headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
    body: JSON.stringify(body)});
  form.querySelector('.result').textContent = r.ok ? 'done' : `refused (${r.status})`;
  if (r.ok) setTimeout(() => location.reload(), 500);
  return false;
}
"""


def page(store: Store) -> str:
    data = state(store)
    sections = "".join(_model_section(store, m) for m in data["models"]) or "<p>No models registered yet.</p>"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><title>evertrain dashboard</title>
<style>{report_html.STYLE} section{{border-top:2px solid #ddd;margin-top:18px}}</style></head>
<body><h1>evertrain</h1><p class="sub">Read-only view; actions need the admin token.</p>
{sections}<script>{SCRIPT}</script></body></html>"""


def mount(app: Any, store: Store, admin_token: str | None = None) -> None:
    """Add the dashboard to an ASGI app (the serving app, so one process serves both).

    ``admin_token`` defaults to the serving app's own; when there is one, the dashboard
    needs it.
    """
    if admin_token is None:
        server = getattr(getattr(app, "state", None), "server", None)
        admin_token = getattr(server, "admin_token", None)
    app.router.routes.extend(routes(store, admin_token))


def authorized(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries ``token`` (bearer, or Basic auth's password); no token: everyone."""
    if not token:
        return True
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = value.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass"))


def _refused() -> Response:
    return JSONResponse(
        {
            "error": "the dashboard needs the admin token (bearer, or as the Basic auth password)",
            "field": None,
        },
        status_code=401,
        headers={"www-authenticate": 'Basic realm="evertrain", charset="UTF-8"'},
    )


def routes(store: Store, admin_token: str | None = None) -> list[Route]:
    async def ui_page(request: Request) -> Response:
        if not authorized(request, admin_token):
            return _refused()
        return HTMLResponse(await run_in_threadpool(page, store))

    async def ui_state(request: Request) -> Response:
        if not authorized(request, admin_token):
            return _refused()
        return JSONResponse(await run_in_threadpool(state, store))

    return [Route("/ui", ui_page), Route("/ui/state", ui_state)]
