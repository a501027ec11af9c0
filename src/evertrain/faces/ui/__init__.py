"""The dashboard: every model, its versions, runs, cycles, drift, rollout and audit trail.

``evertrain ui`` serves it at ``/`` (and ``/ui``); ``evertrain serve`` at ``/ui``, in the
same app as the predict routes. The page is the views of :mod:`.views` (the same as
the report's) and keeps itself current without reloading: every few seconds it asks
``/ui/api/models/NAME/sections`` with the fingerprint it holds and the digest of each
section it shows, and the server answers "unchanged" from a handful of aggregate reads
(shared by the clients polling within a couple of seconds), or the sections whose
content changed (rendered once per change for every client).

When the server has an admin token, the page, its data and its actions need it (the
audit trail and the decisions are not for anyone who can reach the port): as a bearer
token, or as the password of HTTP Basic auth, which a browser asks for by itself (any
user name). Promote and roll back appear only then; each asks for a reason and the
token (never stored) and shows what the admin route answered.

Every read of the store runs in the dashboard's one worker thread, never on the event
loop: the same loop answers predict requests, and a dashboard being polled must not
slow them down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar, cast

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from evertrain.exceptions import EvertrainError, NotFoundError
from evertrain.faces import status_reads as data
from evertrain.faces.status import status_data
from evertrain.faces.ui import evidence, views
from evertrain.store import Store

log = logging.getLogger("evertrain.faces.ui")

POLL_SECONDS = 5
BASE = "/ui"
_SECTION_IDS = frozenset(sid for sid, _ in views.SECTIONS)


def state(store: Store) -> dict[str, Any]:
    """The one-glance status of every model (what ``evertrain status --json`` prints)."""
    return status_data(store)


def model_sections(
    store: Store,
    model: str,
    *,
    admin: bool,
    since: str | None = None,
    runs_offset: int = 0,
    runs_status: str | None = None,
    drift_cycle: int | None = None,
) -> dict[str, Any]:
    """The sections of ``model`` as HTML, or ``unchanged`` when ``since`` is still the store's fingerprint.

    Sections are built once per fingerprint and view: clients polling together after a
    change share one rendering. A request without ``since`` (a first load, an action
    just taken) reads the fingerprint afresh. ``digests`` names each section's content,
    so that a client can say what it holds and get only the sections that differ.
    """
    fp = data.fingerprint(store, model, fresh=since is None)
    if since is not None and since == fp:
        return {"fingerprint": fp, "unchanged": True}
    key = ("sections", id(store), model, fp, admin, runs_offset, runs_status, drift_cycle)
    return cast(
        dict[str, Any],
        evidence.cached(
            key,
            lambda: _render(store, model, fp, admin, runs_offset, runs_status, drift_cycle),
        ),
    )


def parse_have(raw: str | None) -> dict[str, str]:
    """The sections a client holds, ``id:digest,id:digest``, as a mapping (unknown ids are left out).

    >>> parse_have("summary:0a1b2c3d4e5f,runs:ffffffffffff")
    {'summary': '0a1b2c3d4e5f', 'runs': 'ffffffffffff'}
    """
    if not raw:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(","):
        sid, sep, digest = item.partition(":")
        if not sep or not sid or not digest or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"expected section:digest pairs separated by commas, got {item!r}")
        if sid in _SECTION_IDS:
            out[sid] = digest
    return out


def sections_body(store: Store, model: str, *, have: dict[str, str] | None = None, **kwargs: Any) -> bytes:
    """:func:`model_sections` as the JSON body of a response; only the sections not in ``have``.

    A poll after a run finished then carries the few sections it changed (the counts,
    the runs), not the whole page again.
    """
    got = model_sections(store, model, **kwargs)
    if got["unchanged"]:
        return json.dumps(got).encode()
    digests = got["digests"]
    stale = [sid for sid in digests if (have or {}).get(sid) != digests[sid]]
    if len(stale) < len(digests):
        return json.dumps(dict(got, sections={sid: got["sections"][sid] for sid in stale})).encode()
    view = tuple(sorted((k, v) for k, v in kwargs.items() if k != "since"))
    key = ("body", id(store), model, got["fingerprint"], view)
    return cast(bytes, evidence.cached(key, lambda: json.dumps(got).encode()))


def _render(
    store: Store,
    model: str,
    fp: str,
    admin: bool,
    runs_offset: int,
    runs_status: str | None,
    drift_cycle: int | None,
) -> dict[str, Any]:
    d = views.collect(store, model, runs_offset=runs_offset, runs_status=runs_status)
    chosen = views.drift_cycle(d, drift_cycle)
    dist = None
    if chosen is not None:
        try:
            dist = evidence.distributions(store, model, chosen)
        except (EvertrainError, OSError, ValueError):
            dist = None
    # the sections drawn from the cycles are kept while the cycles stay the same (a run that
    # finished elsewhere changes the counts and the runs, not them)
    shown_cycle = None if chosen is None else chosen.get("cycle")
    same = (d["cycles_key"], d["performance_drop"], shown_cycle, dist is None)

    def reuse(sid: str, make: Callable[[], str]) -> str:
        return cast(str, evidence.cached(("section", id(store), model, sid, *same), make))

    parts = views.sections(d, admin=admin, interactive=True, distributions=dist, chosen=chosen, reuse=reuse)
    digests = {sid: hashlib.blake2b(body.encode(), digest_size=8).hexdigest() for sid, body in parts.items()}
    return {
        "fingerprint": fp,
        "unchanged": False,
        "sections": parts,
        "digests": digests,
        "generated_at": d["generated_at"],
    }


def _models_table(models: list[dict[str, Any]], current: str | None) -> str:
    rows = []
    for m in models:
        al = m["aliases"]
        ro = m.get("rollout")
        ro_text = f"{ro['phase']} v{ro['version']} at {ro['share']:.0%}" if ro else "idle"
        name = html.escape(m["name"])
        link = f'<a href="?model={name}">{name}</a>' if m["name"] != current else f"<b>{name}</b>"
        rows.append(
            [
                link,
                *(f"v{al[a]}" if al.get(a) else "-" for a in ("champion", "canary", "shadow", "previous")),
                html.escape(ro_text),
                str(m["n_versions"]),
                f"{m['n_runs']} ({m['n_failed']} failed)",
                views._time(m.get("last_activity")),
            ]
        )
    return views.table(
        ["model", "champion", "canary", "shadow", "previous", "rollout", "versions", "runs", "last activity"],
        rows,
        "models",
    )


def page(store: Store, model: str | None = None, *, admin: bool = False, base: str = BASE) -> str:
    """The whole page for ``model`` (the first model when None)."""
    models = data.models_overview(store)
    names = [m["name"] for m in models]
    if model is not None and model not in names:
        raise NotFoundError(f"model {model!r} is not registered")
    model = model or (names[0] if names else None)
    if model is None:
        body = (
            '<main><p class="note">No models registered yet: train or register one, then reload.</p></main>'
        )
        config = {"base": base, "model": None, "poll": POLL_SECONDS, "fingerprint": None}
        title = "evertrain dashboard"
    else:
        got = model_sections(store, model, admin=admin)
        body = (
            '<main><section id="models" class="view"><h2>Models</h2><div '
            f'class="body">{_models_table(models, model)}</div></section>'
            f"{views.render_sections(got['sections'])}</main>"
        )
        config = {
            "base": base,
            "model": model,
            "poll": POLL_SECONDS,
            "fingerprint": got["fingerprint"],
            "digests": got["digests"],
        }
        title = f"evertrain: {model}"
    admin_note = (
        "Promote and roll back need the admin token; each asks for a reason."
        if admin
        else "Read-only view: promote and roll back are off until the server has an admin token."
    )
    heading = html.escape(model or "evertrain")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{views.STYLE}</style></head><body>
<header class="top"><h1>{heading}</h1><span id="live" class="note" aria-live="polite">live</span>
<p class="sub">evertrain dashboard · {html.escape(admin_note)}</p>{views.nav() if model else ""}</header>
{body}
<dialog id="confirm"><form method="dialog" id="confirm-form"><h3 id="confirm-title"></h3>
<p class="note" id="confirm-what"></p>
<label>Reason (kept in the audit log)<textarea name="reason" required rows="3"></textarea></label>
<label>Admin token (not stored)<input name="token" type="password" required autocomplete="off"></label>
<p><button value="ok" type="submit">Confirm</button>
<button value="cancel" type="button" id="confirm-cancel">Cancel</button></p>
<output id="confirm-result"></output></form></dialog>
<script>const CONFIG = {json.dumps(config)};</script><script>{SCRIPT}</script></body></html>"""


SCRIPT = (resources.files("evertrain.faces.ui") / "dashboard.js").read_text(encoding="utf-8")


def mount(app: Any, store: Store, admin_token: str | None = None, *, root: bool = False) -> None:
    """Add the dashboard to an ASGI app (the serving app, so one process serves both).

    ``admin_token`` defaults to the serving app's own; when there is one, the dashboard
    needs it. ``root``: serve the page at ``/`` too (``evertrain ui``).
    """
    if admin_token is None:
        server = getattr(getattr(app, "state", None), "server", None)
        admin_token = getattr(server, "admin_token", None)
    evidence.preload()
    app.router.routes.extend(
        routes(store, admin_token, root=root, warm=True, stops=getattr(app.state, "stops", None))
    )


def _warm_up(store: Store, admin: bool) -> None:
    """Make the first model's page once, in the background, as the server starts.

    The first load then finds the store's queries compiled and, when nothing changed
    meanwhile, the page made: every load reads the fingerprint afresh, so what it shows
    is never older than the store. A failure here is only logged; the page's own request
    meets it again and answers it.
    """
    try:
        page(store, admin=admin)
    except Exception:  # a warm-up must never stop the server it runs in
        log.debug("the dashboard's warm-up failed", exc_info=True)


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


def _error(status: int, message: str, field: str | None = None) -> Response:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParam(name, f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise _BadParam(name, f"expected 0 or more, got {value}")
    return value


class _BadParam(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_T = TypeVar("_T")


def routes(
    store: Store,
    admin_token: str | None = None,
    *,
    root: bool = False,
    warm: bool = False,
    stops: list[Callable[[], None]] | None = None,
) -> list[Route]:
    """The dashboard's routes; ``warm``: make the first model's page in the background now;
    ``stops``: the app's list of what to run when it stops, given the end of the dashboard's
    thread (renders still queued are dropped, the one under way finishes)."""
    admin = bool(admin_token)
    # One thread does all of the dashboard's reads and rendering, one request after another:
    # however many pages poll, the dashboard competes with the event loop (which answers
    # predict) for the interpreter with one thread at most, and requests for a rendering
    # another is making wait for it instead of making their own. Its priority is left as
    # it is: a thread holding the interpreter lock while the scheduler keeps it waiting
    # would hold the event loop up with it.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evertrain-dashboard")
    if stops is not None:
        stops.append(lambda: worker.shutdown(wait=False, cancel_futures=True))
    if warm:
        worker.submit(_warm_up, store, admin)

    async def off_loop(fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(worker, fn)

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorized(request, admin_token):
                return _refused()
            try:
                return await handler(request)
            except _BadParam as exc:
                return _error(422, f"{exc.field}: {exc.message}", exc.field)
            except NotFoundError as exc:
                return _error(404, str(exc))
            except EvertrainError as exc:
                return _error(getattr(exc, "http_status", 400), str(exc))

        return endpoint

    async def ui_page(request: Request) -> Response:
        model = request.query_params.get("model") or None
        return HTMLResponse(await off_loop(lambda: page(store, model, admin=admin)))

    async def ui_state(request: Request) -> Response:
        return JSONResponse(await off_loop(lambda: state(store)))

    async def api_models(request: Request) -> Response:
        return JSONResponse({"models": await off_loop(lambda: data.models_overview(store))})

    async def api_sections(request: Request) -> Response:
        name = request.path_params["name"]
        status = request.query_params.get("runs_status") or None
        if status not in (None, "failed", "running", "succeeded"):
            raise _BadParam("runs_status", f"expected failed, running or succeeded, got {status!r}")
        offset = _int_param(request, "runs_offset", 0) or 0
        cycle = _int_param(request, "drift_cycle", None)
        since = request.query_params.get("since") or None
        try:
            have = parse_have(request.query_params.get("have"))
        except ValueError as exc:
            raise _BadParam("have", str(exc)) from None
        body = await off_loop(
            lambda: sections_body(
                store,
                name,
                have=have,
                admin=admin,
                since=since,
                runs_offset=offset,
                runs_status=status,
                drift_cycle=cycle,
            )
        )
        return Response(body, media_type="application/json")

    async def api_runs(request: Request) -> Response:
        name = request.path_params["name"]
        status = request.query_params.get("status") or None
        offset = _int_param(request, "offset", 0) or 0
        limit = _int_param(request, "limit", data.RUNS_PAGE) or data.RUNS_PAGE
        got = await off_loop(lambda: data.runs_page(store, name, offset=offset, limit=limit, status=status))
        return JSONResponse(got)

    async def api_version(request: Request) -> Response:
        name = request.path_params["name"]
        version = request.path_params["version"]
        return JSONResponse(await off_loop(lambda: store.lineage.of_version(name, version)))

    routes_ = [
        Route(BASE, guarded(ui_page)),
        Route(f"{BASE}/", guarded(ui_page)),
        Route(f"{BASE}/state", guarded(ui_state)),
        Route(f"{BASE}/api/models", guarded(api_models)),
        Route(f"{BASE}/api/models/{{name}}/sections", guarded(api_sections)),
        Route(f"{BASE}/api/models/{{name}}/runs", guarded(api_runs)),
        Route(f"{BASE}/api/models/{{name}}/versions/{{version:int}}", guarded(api_version)),
    ]
    if root:
        routes_.append(Route("/", guarded(ui_page)))
    return routes_
