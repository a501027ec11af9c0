"""The ``evertrain`` typer application that every command module registers its commands on.

It lives apart from :mod:`evertrain.faces.cli` (which runs the app), so a command module
imports the app it adds to without importing the module that runs it: the imports run
one way, with no circle.

The app loads command modules lazily: :data:`COMMANDS` names each command, the module
that defines it, the help panel it is listed under and its one-line help. ``evertrain
--help`` is drawn from that table alone, and ``evertrain status`` imports only the
module of ``status``, so a quick command never pays for pandas, scikit-learn or FastAPI.
A test holds each one-line help equal to the first line of the command's docstring.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import Any, NamedTuple

import typer
from typer.core import TyperGroup

from evertrain.__version__ import __version__
from evertrain.faces._plain_params import read_plain_values


class CommandEntry(NamedTuple):
    name: str
    module: str
    panel: str
    summary: str


_M = "evertrain.faces."

#: Every command, in the order ``--help`` lists them, grouped by what a user is doing.
COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry(
        "init",
        _M + "cli_train",
        "Start",
        "Write a runnable project: evertrain.yaml and a small generated data set.",
    ),
    CommandEntry(
        "demo",
        _M + "cli_controller",
        "Start",
        "The whole loop on a bundled drifting stream: serve, monitor, retrain, gate, canary, roll back.",
    ),
    CommandEntry("spec", _M + "cli_store", "Start", "The project file evertrain.yaml."),
    CommandEntry(
        "train",
        _M + "cli_train",
        "Train and register",
        "Train MODEL on a fresh window, register the version and check its gates.",
    ),
    CommandEntry(
        "evaluate",
        _M + "cli_train",
        "Train and register",
        "Check VERSION's gates against the champion on its holdout rows; exit 1 if a gate fails.",
    ),
    CommandEntry(
        "register",
        _M + "cli_store",
        "Train and register",
        "Register a model file you trained yourself as a new version.",
    ),
    CommandEntry(
        "runs",
        _M + "cli_train",
        "Train and register",
        "List MODEL's trainings (failed and rejected ones too) and what differs between them.",
    ),
    CommandEntry(
        "status",
        _M + "cli_store",
        "Inspect the registry",
        "Every model, its champion and canary, last drift, last decision.",
    ),
    CommandEntry("versions", _M + "cli_store", "Inspect the registry", "List the versions of MODEL."),
    CommandEntry(
        "lineage",
        _M + "cli_store",
        "Inspect the registry",
        "Where VERSION came from: snapshots and their sources, parent, trigger, gate results.",
    ),
    CommandEntry("audit", _M + "cli_store", "Inspect the registry", "The hash-chained audit log."),
    CommandEntry(
        "promote",
        _M + "cli_store",
        "Deploy",
        "Make VERSION the champion of MODEL (compare-and-swap on the champion alias).",
    ),
    CommandEntry(
        "rollback", _M + "cli_store", "Deploy", "Point MODEL's champion back at the champion before it."
    ),
    CommandEntry(
        "rollout", _M + "cli_serve", "Deploy", "Shadow and canary rollouts: start, advance, status, abort."
    ),
    CommandEntry(
        "serve", _M + "cli_serve", "Deploy", "Serve every registered model over HTTP (KServe V1 shapes)."
    ),
    CommandEntry("logs", _M + "cli_serve", "Deploy", "The prediction, feedback and error logs: compact."),
    CommandEntry(
        "run",
        _M + "cli_controller",
        "Run the loop",
        "Run the controller: monitor, decide, train, gate, roll out, every cycle_interval.",
    ),
    CommandEntry(
        "backtest",
        _M + "cli_backtest",
        "Run the loop",
        "Replay DATA batch by batch through the controller on a simulated clock, beside baselines.",
    ),
    CommandEntry(
        "drift",
        _M + "cli_monitor",
        "Check data",
        "Compare CURRENT with REFERENCE column by column; exit 1 when the dataset (or the target) drifted.",
    ),
    CommandEntry(
        "validate",
        _M + "cli_monitor",
        "Check data",
        "Check DATA against a schema; list every violation by column; exit 1 if any.",
    ),
    CommandEntry(
        "report",
        _M + "cli_controller",
        "Look",
        "Write one self-contained HTML report of MODEL: performance, drift, versions, gates, audit.",
    ),
    CommandEntry(
        "ui",
        _M + "cli_controller",
        "Look",
        "The dashboard at /: models, versions, runs, cycles, drift, rollout, quality, the audit trail.",
    ),
    CommandEntry(
        "mlflow",
        _M + "cli_integrations",
        "Work with other tools",
        "MLflow models both ways (import, export) and mirroring to a tracking server (sync).",
    ),
    CommandEntry(
        "feast",
        _M + "cli_integrations",
        "Work with other tools",
        "Feast: the training-serving skew of a model whose features come from a feature store.",
    ),
)

_BY_NAME = {c.name: c for c in COMMANDS}

EXAMPLES = (
    ("evertrain init shop && cd shop", "a new project from the churn example"),
    ("evertrain train churn", "train, register and gate a version"),
    ("evertrain promote churn 1", "make version 1 the champion"),
    ("evertrain serve --port 8080", "serve it over HTTP"),
    ("evertrain run --cycles 1", "one controller cycle: monitor, decide, retrain, roll out"),
    ("evertrain status --json", "the same view, for scripts (every table takes --json [FILE])"),
)

SUMMARY = "Continuous training: monitor, decide, retrain, gate, roll out and record production models."


class LazyGroup(TyperGroup):
    """The root command group: imports a command's module only when that command runs."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [c.name for c in COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        loaded = self.commands.get(cmd_name)
        if loaded is not None:
            return loaded
        entry = _BY_NAME.get(cmd_name)
        if entry is None:
            return None
        importlib.import_module(entry.module)
        # The module registered its commands on ``app``; build the group again to get them.
        built = typer.main.get_group(app)
        command = built.commands.get(cmd_name)
        if command is not None:
            read_plain_values(command, ctx)
            self.commands[cmd_name] = command
        return command

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        read_plain_values(self, ctx)  # --version and --help, flags read without pydantic
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in _BY_NAME:
            close = get_close_matches(name, list(_BY_NAME), n=2)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} (evertrain --help lists them)")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The top-level help, from :data:`COMMANDS` alone (no command module is imported)."""
        from rich.console import Console
        from rich.panel import Panel
        from rich.table import Table

        out = Console(highlight=False, soft_wrap=False)
        out.print(f"\n Usage: [bold]evertrain[/] [OPTIONS] COMMAND [ARGS]...\n\n {SUMMARY}\n")
        options = Table.grid(padding=(0, 2))
        options.add_row("[bold]--version[/]", "Print the version and exit.")
        options.add_row("[bold]--help[/]", "Show this message and exit.")
        out.print(Panel(options, title="Options", title_align="left", border_style="dim"))
        panels: dict[str, list[CommandEntry]] = {}
        for entry in COMMANDS:
            panels.setdefault(entry.panel, []).append(entry)
        for title, entries in panels.items():
            grid = Table.grid(padding=(0, 2))
            for entry in entries:
                grid.add_row(f"[bold cyan]{entry.name}[/]", entry.summary)
            out.print(Panel(grid, title=title, title_align="left", border_style="dim"))
        examples = Table.grid(padding=(0, 2))
        for line, what in EXAMPLES:
            examples.add_row(line, f"[dim]{what}[/]")
        out.print(Panel(examples, title="Examples", title_align="left", border_style="dim"))
        out.print(
            " Every command works on the project folder given by --project DIR (default: here).\n"
            " Exit codes: 0 ok, 1 a check said no (drift, gate, audit), 2 bad usage or input;\n"
            " `run --once --json` adds 3, an infrastructure error (try again later).\n"
        )


app = typer.Typer(
    name="evertrain",
    cls=LazyGroup,
    help=SUMMARY,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"evertrain {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Continuous training: monitor, decide, retrain, gate, roll out and record production models."""
