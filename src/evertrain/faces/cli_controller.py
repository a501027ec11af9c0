"""The loop's commands: run, demo, backtest, report, ui."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evertrain.faces._common import ProjectOpt, console, open_store
from evertrain.faces.cli_app import app
from evertrain.faces.interrupt import on_interrupt
from evertrain.store.names import check_model_name


@app.command()
def run(
    project: ProjectOpt = Path("."),
    cycles: Annotated[
        int | None, typer.Option(help="Stop after N cycles (default: run until stopped).", min=1)
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one cycle and stop (same as --cycles 1).")
    ] = False,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval",
            metavar="DURATION",
            help="Time between cycles, e.g. 30s, 15m, 1h (default: policy.cycle_interval of the project).",
        ),
    ] = None,
) -> None:
    """Run the controller: monitor, decide, train, gate, roll out, every cycle_interval.

    Prints one line per step and when the next cycle is due. SIGTERM stops it between
    steps; Ctrl-C stops it at once (exit 130) and the next start resumes the cycle.

    Example: evertrain run --interval 30s
    """
    from evertrain.controller.loop import Controller
    from evertrain.exceptions import UsageError
    from evertrain.faces.run_lines import in_words, step_lines, styled, when
    from evertrain.spec import load_spec, parse_duration

    if once and cycles not in (None, 1):
        raise UsageError(f"--once runs one cycle, but --cycles {cycles} was given too")
    if once:
        cycles = 1
    seconds = None
    if interval is not None:
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise UsageError(f"--interval: {exc}") from None
        if seconds <= 0:
            raise UsageError(f"--interval must be longer than 0s, got {interval!r}")
    spec = load_spec(project)
    store = open_store(project)
    controller = Controller(store, spec, project, interval=seconds)
    controller.install_signal_handlers()

    def show_step(cycle: int, name: str, result: dict[str, object]) -> None:
        for line in step_lines(name, dict(result)):
            console.print("  " + styled(line))

    def show(result: dict[str, object]) -> None:
        if result.get("skipped"):
            console.print(f"[yellow]skipped[/]: {result['skipped']}")
        elif result.get("stopped"):
            console.print(
                f"cycle {result.get('cycle')} stopped before its next step; the next start resumes it"
            )
        next_at = result.get("next_at")
        if isinstance(next_at, float):
            console.print(
                f"next cycle at {when(next_at)} (in {in_words(next_at - controller.clock.now())})",
                style="dim",
            )

    def started(cycle: int) -> None:
        console.print(f"cycle {cycle} at {when(controller.clock.now())}")

    warm = spec.training.executor == "local" and cycles != 1
    if warm:
        from evertrain.train.executors import LocalExecutor

        # Trainings come again and again here: each finds a worker with its imports done.
        LocalExecutor.keep_warm()
    done = 0
    try:
        with on_interrupt("the controller stopped; the next `evertrain run` resumes the cycle"):
            done = controller.run(cycles=cycles, on_cycle=show, on_step=show_step, on_start=started)
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
        typer.Option(
            "--dataset",
            "--scenario",
            help="synthetic (the four-phase stream), rainfall (real NOAA weather, demo extra) or llm "
            "(support tickets classified by LoRA fine-tuning of a small language model, llm extra).",
        ),
    ] = "synthetic",
) -> None:
    """The whole loop on a bundled drifting stream: serve, monitor, retrain, gate, canary, roll back."""
    from evertrain.faces.demo import run_demo

    with on_interrupt(f"the demo stopped; {out} holds what it did so far (a new --out starts afresh)"):
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
