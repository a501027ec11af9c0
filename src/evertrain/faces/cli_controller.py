"""The loop's commands: run, demo, backtest, report, ui."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evertrain.faces._common import JsonOpt, ProjectOpt, console, err_console, open_store, write_json
from evertrain.faces.cli_app import app
from evertrain.faces.interrupt import on_interrupt
from evertrain.store.names import check_model_name

if TYPE_CHECKING:
    from evertrain.controller.loop import Controller
    from evertrain.spec import Spec
    from evertrain.store import Store

RESUMES = "the controller stopped; the next `evertrain run` resumes the cycle"


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
    json_out: JsonOpt = None,
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            metavar="STEP",
            help="With --once --json: run the cycle through STEP (monitor, decide, train, gate, "
            "rollout) and leave the rest to the next call, one orchestrator task per step.",
        ),
    ] = None,
) -> None:
    """Run the controller: monitor, decide, train, gate, roll out, every cycle_interval.

    Prints one line per step and when the next cycle is due. SIGTERM stops it between
    steps; Ctrl-C stops it at once (exit 130) and the next start resumes the cycle.

    With --once --json it is a task for a scheduler: the step lines go to stderr, the
    cycle's result and its outcome to stdout as JSON, and the exit code is 0 nothing to do
    or done, 1 a gate or rollout said no, 2 usage or data error, 3 infrastructure error
    (docs/orchestrators.md). With --step STEP the task runs the cycle through STEP only: the
    next call resumes it, so each step can be a task of its own.

    Example: evertrain run --interval 30s
    """
    from evertrain.exceptions import UsageError

    if once and cycles not in (None, 1):
        raise UsageError(f"--once runs one cycle, but --cycles {cycles} was given too")
    if once:
        cycles = 1
    if step is not None and (json_out is None or cycles != 1):
        # an unknown step name is refused inside the task, as JSON with exit 2
        raise UsageError("--step runs part of one cycle as a task: use it with --once --json")
    if json_out is not None:
        if cycles != 1:
            raise UsageError("--json reports one cycle: add --once")
        raise typer.Exit(_run_task(project, interval, json_out, step))
    _run_loop(project, cycles, interval)


def _interval_seconds(interval: str | None) -> float | None:
    from evertrain.exceptions import UsageError
    from evertrain.spec import parse_duration

    if interval is None:
        return None
    try:
        seconds = parse_duration(interval)
    except ValueError as exc:
        raise UsageError(f"--interval: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"--interval must be longer than 0s, got {interval!r}")
    return seconds


def _run_task(project: Path, interval: str | None, target: Path, through: str | None = None) -> int:
    """One cycle (or its steps up to ``through``) as a task: its result and outcome as JSON, its
    exit code by the task contract."""
    from evertrain.controller.loop import describe_error
    from evertrain.controller.outcome import cycle_outcome, error_code, error_exit_code
    from evertrain.faces.run_lines import step_lines

    results: list[dict[str, object]] = []
    try:
        spec, store, controller = _controller(project, interval)

        def show_step(cycle: int, name: str, result: dict[str, object]) -> None:
            for line in step_lines(name, dict(result)):
                err_console.print("  " + line, markup=False)

        with on_interrupt(RESUMES):
            controller.run(cycles=1, on_cycle=results.append, on_step=show_step, through=through)
    except typer.Exit:
        raise  # Ctrl-C: exit 130, as for every command
    except Exception as exc:  # the task contract: every failure is JSON and an exit code
        code = error_exit_code(exc)
        payload = {
            "outcome": "failed",
            "exit_code": code,
            "reason": describe_error(exc),
            "error_code": error_code(exc),
            "cycle": None,
        }
        write_json(target, payload)
        err_console.print(f"error: {payload['reason']}", markup=False)
        return code
    if not results:  # a stop was requested before the cycle began
        result: dict[str, object] = {"cycle": None, "stopped": True}
    else:
        result = results[0]
    outcome = cycle_outcome(dict(result))
    mirrored = mirror(spec, store, project)
    extra = {"tracking": mirrored} if mirrored else {}
    write_json(target, {**outcome.to_dict(), "model": spec.model.name, **result, **extra})
    return outcome.exit_code


def mirror(spec: Spec, store: Store, project: Path) -> dict[str, object]:
    """Mirror the store to the trackers the project file names (``tracking``); what each did.

    A tracker that fails is reported on stderr and in the result, never raised: the loop
    goes on and the next cycle's mirror catches up.
    """
    from evertrain.controller.loop import describe_error
    from evertrain.settings import STATE_DIR

    tracking = spec.tracking
    name = spec.model.name

    def to_mlflow() -> dict[str, object]:
        from evertrain.faces.integrations.mlflow_tracking import sync

        assert tracking.mlflow_uri is not None
        return sync(store, name, tracking.mlflow_uri, tracking.mlflow_experiment).to_dict()

    def to_wandb() -> dict[str, object]:
        from evertrain.faces.integrations.wandb import mirror as to_runs

        assert tracking.wandb_project is not None
        return dict(to_runs(store, name, tracking.wandb_project, project / STATE_DIR))

    done: dict[str, object] = {}
    for tool, configured, copy in (
        ("mlflow", tracking.mlflow_uri, to_mlflow),
        ("wandb", tracking.wandb_project, to_wandb),
    ):
        if not configured:
            continue
        try:
            done[tool] = copy()
        except Exception as exc:
            done[tool] = {"error": describe_error(exc)}
            err_console.print(
                f"{tool} mirror failed: {describe_error(exc)} (the next cycle tries again)", markup=False
            )
    return done


def _controller(project: Path, interval: str | None) -> tuple[Spec, Store, Controller]:
    """The project's file, its store and a controller on them that stops on SIGTERM."""
    from evertrain.controller.loop import Controller
    from evertrain.spec import load_spec

    seconds = _interval_seconds(interval)
    spec = load_spec(project)
    store = open_store(project)
    controller = Controller(store, spec, project, interval=seconds)
    controller.install_signal_handlers()
    return spec, store, controller


def _run_loop(project: Path, cycles: int | None, interval: str | None) -> None:
    from evertrain.faces.run_lines import in_words, step_lines, styled, when

    spec, store, controller = _controller(project, interval)

    def show_step(cycle: int, name: str, result: dict[str, object]) -> None:
        for line in step_lines(name, dict(result)):
            console.print("  " + styled(line))

    def show(result: dict[str, object]) -> None:
        mirror(spec, store, project)
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
        with on_interrupt(RESUMES):
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
    """The dashboard at /: models, versions, runs, cycles, drift, rollout, quality, the audit trail.

    Served by the same app as the model server (predict routes included; `evertrain
    serve` has it at /ui). With EVERTRAIN_ADMIN_TOKEN set, the page needs the token and
    offers promote and roll back; without it, the page is read-only.
    """
    import uvicorn

    from evertrain.faces import ui as dashboard
    from evertrain.serve.app import create_app
    from evertrain.serve.guard import uvicorn_config
    from evertrain.spec import SPEC_FILE, ServingSpec, load_spec

    store = open_store(project)
    spec = load_spec(project) if (project / SPEC_FILE).is_file() else None
    app_ = create_app(store, spec)
    dashboard.mount(app_, store, root=True)
    console.print(f"dashboard on http://{host}:{port}/")
    serving = spec.serving if spec is not None else ServingSpec.model_validate({})
    uvicorn.Server(uvicorn_config(app_, serving, host, port)).run()
