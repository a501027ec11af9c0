"""The ``evertrain`` typer application that every command module registers its commands on.

It lives apart from :mod:`evertrain.faces.cli` (which imports the command modules and
runs the app), so a command module imports the app it adds to without importing the
module that imports it: the imports run one way, with no circle.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="evertrain",
    help="Continuous training: monitor, decide, retrain, gate, roll out and record production models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
