"""Monitoring commands: ``evertrain drift`` and ``evertrain validate``.

``drift`` exits 1 when the dataset drifted and 0 when not; ``validate`` exits 1 when
the batch breaks its schema. Both exit 2, with a one-line reason, on bad input: a
missing file, a file that is not a table, a broken CSV row, an empty table, a missing
column, a column whose type changed, an all-missing column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from evertrain.exceptions import UsageError
from evertrain.faces._common import console, err_console, to_stdout, write_json
from evertrain.faces.cli_app import app
from evertrain.faces.interrupt import progress_line
from evertrain.monitor.decide import DEFAULT_ALPHA, DEFAULT_CORRECTION

if TYPE_CHECKING:
    from evertrain.monitor.profiles import Profile
    from evertrain.train.progress import Listener

# Each command imports what it computes with inside its body: ``drift`` reads Parquet
# column by column into profiles and never needs pandas, the schema checks of
# ``validate`` or scipy.stats, and ``--help`` needs none of them.

#: A REFERENCE whose name ends so is a saved profile, not a table.
PROFILE_SUFFIX = ".json"

JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Write the report as JSON to FILE ('-' for standard output).")
]


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x != 0 and abs(x) < 10 ** (-digits):
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


@app.command()
def drift(
    reference: Annotated[
        Path, typer.Argument(help="Reference data (Parquet or CSV): what the model learned from.")
    ],
    current: Annotated[Path, typer.Argument(help="Current data (Parquet or CSV): what it sees now.")],
    json_out: JsonOut = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report to FILE.")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Target column: reported apart, not counted in the share.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="False-alarm budget of the whole report.")] = DEFAULT_ALPHA,
    correction: Annotated[
        str, typer.Option(help="bonferroni or benjamini-hochberg (bh): how alpha is shared across columns.")
    ] = DEFAULT_CORRECTION,
    drift_share: Annotated[
        float | None,
        typer.Option(help="Dataset drift when at least this share of columns drift (default: any)."),
    ] = None,
    save_profile: Annotated[
        Path | None,
        typer.Option(
            "--save-profile",
            help="Also save REFERENCE's profile to FILE; give FILE as REFERENCE next time to skip it.",
        ),
    ] = None,
) -> None:
    """Compare CURRENT with REFERENCE column by column; exit 1 when the dataset (or the target) drifted.

    REFERENCE may also be a profile saved by --save-profile: the reference is then not read again.
    """
    import threading

    from evertrain.data.tables import open_table
    from evertrain.monitor.report import drift as compute_drift

    # The p-values at the end need scipy.special; importing it on the other core while
    # this one reads and profiles the columns takes it off the wall-clock time.
    threading.Thread(target=_import_quietly, args=("scipy.special",), daemon=True).start()
    with progress_line(f"drift: {current.name} vs {reference.name}", to_stdout(json_out)) as show:
        told = _columns_told(show)
        cur = open_table(current)
        ref = _reference(reference, save_profile, cur.num_rows, told)
        report = compute_drift(
            ref,
            cur,
            target=target,
            alpha=alpha,
            correction=correction,
            drift_share=drift_share,
            labels=(reference.name, current.name),
            progress=told,
        )
    if json_out is not None:
        write_json(json_out, report.to_dict())
    if html is not None:
        from evertrain.faces.report_drift import render_drift_html

        try:
            html.write_text(render_drift_html(report, title=f"{current.name} vs {reference.name}"))
        except OSError as exc:
            raise UsageError(f"cannot write {html}: {exc.strerror or exc}") from None
    if json_out is None or str(json_out) != "-":
        from rich.table import Table

        table = Table(title=f"drift: {current.name} vs {reference.name}", title_justify="left")
        for col in ("column", "kind", "test", "p (adj.)", "effect", "threshold", "drifted"):
            table.add_column(col, justify="right" if col in ("p (adj.)", "effect", "threshold") else "left")
        shown = report.sorted_columns() + ([report.target] if report.target is not None else [])
        for c in shown:
            name = c.name + (" (target)" if report.target is not None and c is report.target else "")
            table.add_row(
                name,
                c.kind,
                c.method,
                _fmt(c.p_value_adjusted),
                _fmt(c.effect_size),
                _fmt(c.threshold),
                "[bold red]yes[/]" if c.drifted else "no",
            )
        console.print(table)
        verdict = "[bold red]dataset drift[/]" if report.dataset_drift else "[green]no dataset drift[/]"
        console.print(
            f"{verdict}: {len(report.drifted_columns)} of {len(report.columns)} columns drifted "
            f"({report.correction}, alpha {report.alpha:g}, {report.hypotheses} hypotheses; "
            f"{report.n_reference} reference rows, {report.n_current} current rows; "
            f"{'exact' if report.exact else 'from profiles'})"
        )
    target_drift = report.target is not None and report.target.drifted
    if target_drift and (json_out is None or str(json_out) != "-"):
        console.print(f"[bold red]target drift[/]: {target} moved")
    if report.dataset_drift or target_drift:
        raise typer.Exit(1)


def _import_quietly(module: str) -> None:
    """Import ``module`` ahead of its use; a failure shows where it is used, not here."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception:  # reported by the import that needs it
        return


def _columns_told(show: Listener | None) -> Callable[[str, int, int], None] | None:
    """The drift computation's column counts, shown on the progress line (if there is one)."""
    if show is None:
        return None
    from evertrain.train.progress import Progress

    return lambda what, done, total: show(Progress(what, done, total))


def _reference(
    path: Path,
    save_profile: Path | None,
    current_rows: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> Any:
    """REFERENCE as ``drift`` compares with it: a saved profile, or the table (opened, not read).

    With ``--save-profile``, the table is profiled here and saved; when the two sides are
    large enough to be compared by profiles anyway, that profile is the one compared with
    (profiled once), else the rows are compared exactly, as without the option.
    """
    from evertrain.data.tables import open_table
    from evertrain.monitor.profiles import Profile
    from evertrain.monitor.report import EXACT_MAX_ROWS

    if path.name.lower().endswith(PROFILE_SUFFIX):
        if save_profile is not None:
            raise UsageError("REFERENCE is a profile already; --save-profile needs a table")
        return Profile.load(path)
    ref = open_table(path)
    if save_profile is None:
        return ref
    told = None if progress is None else (lambda done, total: progress(f"profiling {path.name}", done, total))
    prof = Profile.from_table(ref, sketch=False, role=path.name, progress=told)
    _save(prof, save_profile)
    return prof if ref.num_rows + current_rows > EXACT_MAX_ROWS else ref


def _save(prof: Profile, target: Path) -> None:
    try:
        prof.save(target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="The batch to check (Parquet or CSV).")],
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Infer the schema from this table (Parquet or CSV).")
    ] = None,
    schema: Annotated[
        Path | None, typer.Option("--schema", help="A schema JSON file written earlier.")
    ] = None,
    json_out: JsonOut = None,
    write_schema: Annotated[
        Path | None,
        typer.Option("--write-schema", help="Also save the schema inferred from --reference here."),
    ] = None,
) -> None:
    """Check DATA against a schema; list every violation by column; exit 1 if any."""
    from rich.table import Table

    from evertrain.data.schema import Schema, infer_schema, validate_table
    from evertrain.data.tables import read_table

    if (reference is None) == (schema is None):
        raise UsageError("give exactly one of --reference REF or --schema FILE")
    sch: Schema
    if schema is not None:
        sch = Schema.load(schema)
    elif reference is not None:
        sch = infer_schema(read_table(reference))
        if write_schema is not None:
            sch.save(write_schema)
    else:  # pragma: no cover - excluded by the check above
        raise UsageError("give exactly one of --reference REF or --schema FILE")
    batch = read_table(data, allow_empty=True)
    result = validate_table(batch, sch)
    if json_out is not None:
        write_json(json_out, result.to_dict())
    if json_out is None or str(json_out) != "-":
        if result.violations:
            table = Table(title=f"validate: {data.name}", title_justify="left")
            for col in ("column", "rule", "count", "examples", "message"):
                table.add_column(col)
            for v in result.violations:
                shown = ", ".join(repr(e) for e in v.examples)
                table.add_row(v.column, v.rule, str(v.count), shown, v.message)
            console.print(table)
        n_err = len(result.errors)
        if result.ok:
            console.print(f"[green]ok[/]: {result.columns_checked} columns, {result.n_rows} rows")
        else:
            err_console.print(f"{n_err} violation{'s' if n_err != 1 else ''} in {data.name}")
    if not result.ok:
        raise typer.Exit(1)
