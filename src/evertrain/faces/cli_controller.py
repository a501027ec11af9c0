"""The loop's commands: run, demo, backtest, report, ui."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evertrain.faces._common import ProjectOpt, console, open_store
from evertrain.faces.cli_app import app
from evertrain.store.names import check_model_name


@app.command()
def run(
    project: ProjectOpt = Path("."),
    cycles: Annotated[
        int | None, typer.Option(help="Stop after N cycles (default: run until SIGTERM).")
    ] = None,
) -> None:
    """Run the controller: monitor, decide, train, gate, roll out, every cycle_interval."""
    from evertrain.controller.loop import Controller
    from evertrain.spec import load_spec

    spec = load_spec(project)
    store = open_store(project)
    controller = Controller(store, spec, project)
    controller.install_signal_handlers()

    def show(result: dict[str, object]) -> None:
        if result.get("skipped"):
            console.print(f"[yellow]skipped[/]: {result['skipped']}")
            return
        decision = result.get("decide") or {}
        reasons = "; ".join(decision.get("reasons", [])) if isinstance(decision, dict) else ""
        action = decision.get("action", "-") if isinstance(decision, dict) else "-"
        console.print(f"cycle {result.get('cycle')}: {action} {reasons}")

    warm = spec.training.executor == "local" and cycles != 1
    if warm:
        from evertrain.train.executors import LocalExecutor

        # Trainings come again and again here: each finds a worker with its imports done.
        LocalExecutor.keep_warm()
    try:
        done = controller.run(cycles=cycles, on_cycle=show)
    finally:
        if warm:
            LocalExecutor.keep_warm(False)
    console.print(f"{done} cycle(s) run")


@app.command()
def report(
    model: str,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Write one self-contained HTML report of MODEL: performance, drift, versions, gates, audit."""
    from evertrain.faces.report_html import write_report

    check_model_name(model)
    store = open_store(project)
    store.registry.get_aliases(model)  # fails with a clear message for an unknown model
    write_report(store, model, str(out))
    console.print(f"report written to {out}")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the demo project, summary and report.")
    ] = Path("demo-out"),
    fast: Annotated[bool, typer.Option("--fast", help="A shorter stream.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic stream.")] = 7,
    dataset: Annotated[
        str,
        typer.Option(help="synthetic (the four-phase stream) or rainfall (real NOAA weather, demo extra)."),
    ] = "synthetic",
) -> None:
    """The whole loop on a bundled drifting stream: serve, monitor, retrain, gate, canary, roll back."""
    from evertrain.faces.demo import run_demo

    run_demo(out, fast=fast, seed=seed, dataset=dataset, console=console)


@app.command()
def ui(
    project: ProjectOpt = Path("."),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
) -> None:
    """The dashboard: models, aliases, rollout state, drift and performance, the audit trail.

    Served by the same app as the model server (predict routes included); read-only
    without the admin token.
    """
    import uvicorn

    from evertrain.faces import ui as dashboard
    from evertrain.serve.app import create_app
    from evertrain.serve.guard import uvicorn_config
    from evertrain.spec import SPEC_FILE, ServingSpec, load_spec

    store = open_store(project)
    spec = load_spec(project) if (project / SPEC_FILE).is_file() else None
    app_ = create_app(store, spec)
    dashboard.mount(app_, store)
    console.print(f"dashboard on http://{host}:{port}/ui")
    serving = spec.serving if spec is not None else ServingSpec.model_validate({})
    uvicorn.Server(uvicorn_config(app_, serving, host, port)).run()
