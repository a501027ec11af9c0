"""Serving and rollout commands: ``evertrain serve`` and ``evertrain rollout ...``."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from evertrain import settings
from evertrain.exceptions import CheckFailed, EvertrainError, UsageError
from evertrain.faces._common import (
    SPEC_FILE,
    JsonOpt,
    ProjectOpt,
    apply_storage,
    console,
    err_console,
    open_store,
    storage_logs_url,
    write_json,
)
from evertrain.faces.cli_app import app
from evertrain.spec import ServingSpec, Spec, load_spec
from evertrain.store import Store
from evertrain.store.names import check_model_name

rollout_app = typer.Typer(
    help="Shadow and canary rollouts: start, advance, status, abort.", no_args_is_help=True
)
app.add_typer(rollout_app, name="rollout")
logs_app = typer.Typer(help="The prediction, feedback and error logs: compact.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")

GRACEFUL_SHUTDOWN_SECONDS = 30
"""How long SIGTERM waits for in-flight requests before closing connections (logs are flushed after)."""


def _spec(project: Path) -> Spec | None:
    return load_spec(project) if (project / SPEC_FILE).is_file() else None


def _replica_store(
    project: Path, db_url: str | None, artifacts_url: str | None, logs_url: str | None
) -> tuple[Store, Spec | None]:
    """The store a replica serves from, and the project file it serves with.

    The store URLs come from the flags, else the environment, else the project folder.
    The project file is the local one when there is one, else the one the controller
    saved in the store: a replica started with only the store URLs serves the project's
    models with the project's settings.
    """
    from evertrain.spec import spec_from_json
    from evertrain.store.storage import configure

    spec = _spec(project)
    apply_storage(project)
    store = Store(
        db_url or settings.db_url(project),
        artifacts_url or settings.artifacts_url(project),
        logs_url=logs_url or storage_logs_url(project) or settings.logs_url(project),
    )
    store.open()
    stored = None if spec is not None else store.specs.current()
    if stored is not None:
        spec = spec_from_json(stored.data, f"project file of model {stored.model!r} in the store")
        configure(spec.storage.options)
        if not logs_url and not settings.LOGS_URL.raw() and spec.storage.logs_url:
            store.logs_url = spec.storage.logs_url
        err_console.print(
            f"using the project file of model {stored.model!r} saved in the store ({stored.sha256[:12]})"
        )
    return store, spec


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address (default: the spec's, or 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port, 1-65535 (default: the spec's, or 8080).")
    ] = None,
    project: ProjectOpt = Path("."),
    db_url: Annotated[
        str | None, typer.Option("--db-url", help=f"Metadata store URL (default: ${settings.DB_URL.name}).")
    ] = None,
    artifacts_url: Annotated[
        str | None,
        typer.Option(
            "--artifacts-url", help=f"Artifact store URL (default: ${settings.ARTIFACTS_URL.name})."
        ),
    ] = None,
    logs_url: Annotated[
        str | None,
        typer.Option(
            "--logs-url",
            help=f"Logs URL (default: ${settings.LOGS_URL.name}, else the project file's storage.logs_url).",
        ),
    ] = None,
) -> None:
    """Serve every registered model over HTTP (KServe V1 shapes).

    Aliases and rollout shares are read from the store every few seconds, so several
    replicas stay in step. Without a project file here, the one the controller saved in
    the store is used, so a replica needs only the store URLs. SIGTERM or Ctrl-C stop
    taking connections, let in-flight requests finish and write every queued log row
    before exiting.
    """
    from evertrain.faces import ui
    from evertrain.serve import create_app
    from evertrain.serve.guard import uvicorn_config

    store, spec = _replica_store(project, db_url, artifacts_url, logs_url)
    serving = spec.serving if spec is not None else ServingSpec.model_validate({})
    try:
        application = create_app(store, spec, project=project)
        ui.mount(application, store)  # the dashboard at /ui, behind the admin token when one is set
        bind_host = host or serving.host
        bind_port = serving.port if port is None else port
        names = store.registry.list_models()
        admin = "on" if settings.ADMIN_TOKEN.raw() else f"off: set {settings.ADMIN_TOKEN.name}"
        err_console.print(
            f"serving {len(names)} model(s) on http://{bind_host}:{bind_port} (admin routes {admin})"
        )
        config = uvicorn_config(
            application, serving, bind_host, bind_port, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS
        )
        server = _graceful_server(config)
        _check_bindable(bind_host, bind_port)
        server.run()
    finally:
        store.close()


def _check_bindable(host: str, port: int) -> None:
    """Refuse, in one line, an address this process cannot listen on (in use, not local, no permission)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def _graceful_server(config: Any) -> Any:
    """uvicorn's server, except that SIGTERM and SIGINT end in a normal exit (status 0).

    uvicorn re-raises the signal after its graceful shutdown, so the process would die
    by the signal; here the shutdown (requests drained, logs flushed) is the whole story.
    """
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)


@rollout_app.command("start")
def rollout_start(
    model: str,
    version: str,
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Start rolling out VERSION of MODEL: shadow, then the canary steps of the spec.

    The version is loaded first, as serving would load it; one that cannot be loaded is
    refused with the reason (exit 2) and no rollout starts.
    """
    from evertrain.rollout import start_rollout

    check_model_name(model)
    spec = _spec(project)
    own = spec if spec is not None and spec.model.name == model else None
    store = open_store(project)
    _check_loads(store, model, version, own)
    started = start_rollout(
        store,
        model,
        version,
        actor=settings.actor(),
        rollout_spec=None if own is None else own.rollout,
        task=None if own is None else own.model.task,
        reason=reason,
    )
    if as_json:
        write_json(as_json, started.to_dict())
    else:
        console.print(f"{model}: rolling out v{started.version} ({started.phase}, share {started.share:g})")


def _check_loads(store: Any, model: str, version: str, spec: Spec | None) -> None:
    """Load the challenger as a serving replica would; refuse it, in one line, if that fails."""
    from evertrain.train.predictor import load_version

    number = store.registry.resolve(model, version).version
    try:
        load_version(store, model, number, spec=None if spec is None else spec.model)
    except CheckFailed:
        raise  # an artifact that fails its hash: exit 1, as everywhere
    except EvertrainError as exc:
        raise UsageError(f"model {model!r} version {number} cannot be loaded: {exc.message}") from None
    except Exception as exc:  # a foreign library's failure to load is the answer we need
        raise UsageError(
            f"model {model!r} version {number} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None


@rollout_app.command("advance")
def rollout_advance(model: str, project: ProjectOpt = Path("."), as_json: JsonOpt = None) -> None:
    """Judge the current step of MODEL's rollout on the serving logs and act (one controller tick)."""
    from evertrain.rollout import advance

    check_model_name(model)
    store = open_store(project)
    decision = advance(store, model, actor=settings.actor())
    if as_json:
        write_json(as_json, decision.to_dict())
        return
    console.print(f"{model}: {decision.action}")
    for reason in decision.reasons:
        console.print(f"  {reason}")


@rollout_app.command("status")
def rollout_status(model: str, project: ProjectOpt = Path("."), as_json: JsonOpt = None) -> None:
    """The active rollout of MODEL and the recent ones."""
    from evertrain.rollout.state import rollout_status as status_of

    check_model_name(model)
    store = open_store(project)
    active, past = status_of(store, model)
    if as_json:
        write_json(as_json, {"model": model, "active": active, "history": past})
        return
    if active is None:
        console.print(f"{model}: no active rollout")
    else:
        console.print(
            f"{model}: v{active['version']} {active['phase']} step {active['step']} "
            f"share {active['share']:g} ({'; '.join(active['reasons'])})"
        )
    for r in past:
        if r["phase"] == "done":
            console.print(f"  v{r['version']}: {r['outcome']} ({'; '.join(r['reasons'])})")


@rollout_app.command("abort")
def rollout_abort(
    model: str,
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Stop MODEL's shadow or canary: its alias is cleared; the champion stays."""
    from evertrain.rollout import abort_rollout

    check_model_name(model)
    store = open_store(project)
    done = abort_rollout(store, model, actor=settings.actor(), reason=reason)
    console.print(f"{model}: rollout of v{done.version} aborted")


@logs_app.command("compact")
def logs_compact(
    model: Annotated[
        str | None, typer.Option(help="Only this model's logs (default: every model's).")
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Compact the small log parts of each day into larger ones (safe while replicas write).

    Takes the compaction lease in the metadata store, so it never runs beside the
    controller's own compaction; exits 1 when another compaction holds it.
    """
    from evertrain.controller.loop import compact_logs

    if model is not None:
        check_model_name(model)
    store = open_store(project)
    result = compact_logs(store, models=None if model is None else [model])
    if result is None:
        err_console.print("another compaction of these logs is running; try again later")
        raise typer.Exit(1)
    if as_json is not None:
        write_json(as_json, {"logs_url": store.logs_url, **result.to_dict()})
        return
    console.print(
        f"{store.logs_url}: {result.parts_before} parts -> {result.parts_after} "
        f"({result.rows} rows moved into {len(result.written)} larger parts, "
        f"{result.deleted} small parts deleted)"
    )
