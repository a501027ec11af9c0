"""The dashboard: one page per store, served by the same ASGI app as the model server.

Shows every model with its aliases, rollout state, last decision, accuracy and drift over
time, and the audit trail. Read-only for everyone; the promote and rollback buttons call
the admin routes, which need the admin token (the page asks for it and never stores it).
"""

from __future__ import annotations

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
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


def mount(app: Any, store: Store) -> None:
    """Add the dashboard to an ASGI app (the serving app, so one process serves both)."""
    app.router.routes.extend(routes(store))


def routes(store: Store) -> list[Route]:
    async def ui_page(_request: Request) -> HTMLResponse:
        return HTMLResponse(page(store))

    async def ui_state(_request: Request) -> JSONResponse:
        return JSONResponse(state(store))

    return [Route("/ui", ui_page), Route("/ui/state", ui_state)]
