"""``evertrain backtest DATA``: replay history through the loop, beside the baselines.

Inside a project (``--project DIR`` holding ``evertrain.yaml``) the project's spec is
replayed as written; outside one, the default spec with the schema inferred from DATA
and the target named by ``--target``. Nothing is written to the project's store: the
replay runs in a throwaway project (see :mod:`evertrain.controller.backtest`).

Exit codes: 0 when the replay ran; 2, with a one-line reason, on bad input (a missing
or unreadable file, a missing target column, too few rows for the batches asked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evertrain.controller.results import BacktestResult
from evertrain.exceptions import UsageError
from evertrain.faces._common import ProjectOpt, console, err_console, write_json
from evertrain.faces.cli_app import app
from evertrain.faces.interrupt import on_interrupt
from evertrain.spec import SPEC_FILE, load_spec

POLICY = "policy"


def _pct(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if metric == "r2" else f"{value:.2%}"


def comparison_table(result: BacktestResult, title: str) -> Table:
    """Policy and baselines side by side: mean score, retrains, promotions, training seconds."""
    metric = result["settings"]["metric"]
    table = Table(title=title, title_justify="left")
    table.add_column("arm")
    table.add_column(f"mean {metric}", justify="right")
    table.add_column(f"vs {POLICY}", justify="right")
    table.add_column("retrains", justify="right")
    table.add_column("promotions", justify="right")
    table.add_column("train s", justify="right")
    ours = result["mean_accuracy"]
    table.add_row(
        f"[bold]{POLICY}[/] (the spec)",
        _pct(ours, metric),
        "",
        str(result["n_retrains"]),
        str(len(result["promotions"])),
        f"{result['train_seconds']:.1f}",
    )
    for name, base in result["baselines"].items():
        theirs = base["mean_accuracy"]
        delta = "-" if theirs is None or ours is None else f"{(theirs - ours) * 100:+.2f} pt"
        table.add_row(
            name,
            _pct(theirs, metric),
            delta,
            str(base["n_retrains"]),
            str(base["n_retrains"]),
            f"{base['train_seconds']:.1f}",
        )
    return table


def events_table(result: BacktestResult) -> Table | None:
    """What the loop did and why: retrains (with their gates), promotions, rollbacks."""
    rows: list[tuple[int, str, str]] = []
    for r in result["retrains"]:
        used = r.get("training_set") or ""
        again = f" ({used} reinstated)" if used.startswith("version ") else ""
        gates = f" -> v{r['version']}{again} gates {r['gates']}" if r.get("version") is not None else ""
        why = r["reason"]
        if r.get("gates") not in (None, "passed") and r.get("gate_reason"):
            why = f"{why}; gates: {r['gate_reason']}"  # both numbers and the interval, as the gate said
        rows.append((r["batch"], f"retrain{gates}", why))
    for p in result["promotions"]:
        rows.append((p["batch"], f"v{p['version']} promoted", ""))
    for move in result["rollbacks"]:
        b = cast(dict[str, Any], move)  # a rollback also says what it rolled back ("from")
        why = "; ".join(b.get("reasons", []))
        if isinstance(b.get("from"), int):
            # The champion changed back: "version" is the one serving again, "from" the one rolled back.
            rows.append((b["batch"], f"v{b['from']} rolled back, v{b['version']} champion again", why))
        else:
            rows.append((b["batch"], f"canary v{b['version']} rolled back", why))
    if not rows:
        return None
    table = Table(title="what the loop did", title_justify="left")
    for col in ("batch", "event", "why"):
        table.add_column(col)
    for batch, event, why in sorted(rows, key=lambda r: r[0]):
        table.add_row(str(batch), event, why)
    return table


@app.command()
def backtest(
    data: Annotated[Path, typer.Argument(help="History to replay (Parquet or CSV), rows in time order.")],
    target: Annotated[
        str | None, typer.Option("--target", help="Target column (outside a project; inside, the spec's).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows per batch (one controller cycle).")
    ] = 1000,
    label_delay: Annotated[
        int | None,
        typer.Option(
            "--label-delay", help="Batches before a batch's labels arrive (default: the spec's delay)."
        ),
    ] = None,
    warm: Annotated[
        int | None, typer.Option("--warm", help="Batches of labelled history the first model trains on.")
    ] = None,
    every: Annotated[
        list[int] | None,
        typer.Option("--every", help="Baseline: retrain every N batches (repeatable; default 5 and 20)."),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the result as JSON to FILE ('-' for standard output)."),
    ] = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time-column",
            help="Event time column: rows are sorted by it, batches cut in time order; never a feature.",
        ),
    ] = None,
    label_time_column: Annotated[
        str | None,
        typer.Option(
            "--label-time-column",
            help="When each label arrived (default: a column named label_ts, label_time, labelled_at...); "
            "sets the label delay when --label-delay is not given; never a feature.",
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Keep the replay's project (store, logs, warehouse) in this new folder."),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Replay DATA batch by batch through the controller on a simulated clock, beside baselines."""
    from evertrain.controller.backtest import DEFAULT_BASELINES_EVERY, DEFAULT_WARM_BATCHES
    from evertrain.controller.backtest import backtest as run_backtest
    from evertrain.data.tables import read_table

    spec = load_spec(project) if (project / SPEC_FILE).is_file() else None
    if spec is None and target is None:
        raise UsageError(f"no {SPEC_FILE} in {project}: name the target column with --target COL")
    table = read_table(data)
    warm_batches = DEFAULT_WARM_BATCHES if warm is None else warm
    replayed = max(0, -(-table.num_rows // max(batch_size, 1)) - warm_batches)
    quiet = json_out is not None and str(json_out) == "-"
    progress = Progress(
        TextColumn("replaying {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet or not err_console.is_terminal,
    )
    interrupted = "the backtest stopped" + (f"; its replay project is in {keep}" if keep else "")
    with on_interrupt(interrupted), progress:
        task = progress.add_task(data.name, total=replayed)

        def tick(event: dict[str, Any]) -> None:
            progress.advance(task)

        result = run_backtest(
            table,
            spec=spec,
            target=target,
            batch_size=batch_size,
            label_delay=label_delay,
            warm_batches=warm_batches,
            baselines_every=DEFAULT_BASELINES_EVERY if not every else tuple(every),
            workdir=keep,
            on_batch=tick,
            what=str(data),
            time_column=time_column,
            label_time_column=label_time_column,
        )
    if json_out is not None:
        write_json(json_out, result)
    if quiet:
        return
    s = result["settings"]
    title = (
        f"backtest of {data.name}: {s['n_batches'] - s['warm_batches']} batches of {s['batch_size']} rows "
        f"after {s['warm_batches']} warm ones, labels {s['label_delay_batches']} batch(es) late, "
        f"{s['task']} target {s['target']!r}"
    )
    record = cast(BacktestResult, result)  # the shape of the plain dict, for the type checker
    console.print(comparison_table(record, title))
    events = events_table(record)
    if events is not None:
        console.print(events)
    if s.get("workdir"):
        console.print(f"replay project kept in {s['workdir']}")
