"""The integration commands: ``evertrain mlflow import|export|sync``, ``evertrain feast skew``.

Each imports its tool only when it runs (``evertrain[mlflow]``); the rest of the CLI never does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from evertrain.faces._common import JsonOpt, ProjectOpt, console, open_store, require_project, write_json
from evertrain.faces.cli_app import app
from evertrain.store.names import check_model_name

mlflow_app = typer.Typer(
    help="MLflow models both ways (import, export) and mirroring to a tracking server (sync).",
    no_args_is_help=True,
)
app.add_typer(mlflow_app, name="mlflow")

TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, or tracking.mlflow_uri)."
    ),
]


@mlflow_app.command("import")
def mlflow_import(
    model: Annotated[str, typer.Argument(help="Model name (as in evertrain.yaml).")],
    uri: Annotated[
        str, typer.Argument(help="models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN/PATH or a folder.")
    ],
    tracking_uri: TrackingOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why this version is registered.")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Register an MLflow model as a new version (LightGBM text or skops; pickle only if trusted).

    The model must predict on a sample of the project's data, as for `evertrain register`;
    the MLflow run's metrics come with it when its server answers.
    """
    from evertrain.faces.cli_store import register_bytes
    from evertrain.faces.integrations.mlflow import fetch_model, read_model, run_metrics
    from evertrain.spec import load_spec

    check_model_name(model)
    require_project(project)
    spec = load_spec(project)
    where = tracking_uri or spec.tracking.mlflow_uri
    with tempfile.TemporaryDirectory(prefix="evertrain-mlflow-") as tmp:
        folder = fetch_model(uri, Path(tmp), where)
        got = read_model(
            folder, trusted_types=spec.model.trusted_types, trust_pickle=spec.model.trust_pickle, label=uri
        )
    register_bytes(
        project,
        model,
        got.data,
        got.framework,
        what=f"MLflow model {uri}",
        metrics=run_metrics(got.run_id, where),
        params={**got.params, "mlflow_uri": uri},
        reason=reason or f"imported from MLflow: {uri}",
        as_json=as_json,
    )


@mlflow_app.command("export")
def mlflow_export(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, canary...).")],
    out: Annotated[Path, typer.Argument(help="New folder for the MLflow model.")],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Write VERSION as an MLflow model folder: `mlflow models serve -m OUT` serves it."""
    from evertrain.faces.integrations.mlflow import export_version
    from evertrain.spec import SPEC_FILE, load_spec

    check_model_name(model)
    store = open_store(project)
    mv = store.registry.resolve(model, version)
    spec = load_spec(project) if (project / SPEC_FILE).is_file() else None
    task = spec.model.task if spec is not None and spec.model.name == model else None
    export_version(store, model, mv.version, out, task=task)
    if as_json:
        write_json(as_json, {"model": model, "version": mv.version, "path": str(out)})
    else:
        console.print(f"{model} v{mv.version} exported to {out} (mlflow models serve -m {out})")


@mlflow_app.command("sync")
def mlflow_sync(
    tracking_uri: TrackingOpt = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Mirror trainings, metrics, gate verdicts and alias moves to an MLflow tracking server."""
    from evertrain.exceptions import UsageError
    from evertrain.faces.integrations.mlflow_tracking import sync
    from evertrain.spec import load_spec

    spec = load_spec(project)
    uri = tracking_uri or spec.tracking.mlflow_uri
    if not uri:
        raise UsageError(
            "no tracking server: give --tracking-uri or set tracking.mlflow_uri in evertrain.yaml"
        )
    store = open_store(project)
    done = sync(store, spec.model.name, uri, spec.tracking.mlflow_experiment)
    if as_json:
        write_json(as_json, done.to_dict())
    else:
        console.print(
            f"mirrored to {uri} (experiment {done.experiment_id}): {done.runs_created} new run(s), "
            f"{done.gates} gate verdict(s), {done.moves} new alias move(s)"
        )


feast_app = typer.Typer(
    help="Feast: the training-serving skew of a model whose features come from a feature store.",
    no_args_is_help=True,
)
app.add_typer(feast_app, name="feast")


@feast_app.command("skew")
def feast_skew(
    last: Annotated[
        str, typer.Option("--last", metavar="DURATION", help="Served rows of this long ago until now.")
    ] = "1d",
    max_mismatch: Annotated[
        float,
        typer.Option(help="Share of rows whose served value may differ from the offline one (0 to 1)."),
    ] = 0.05,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Compare the features served (the prediction log) with the offline store's, point in time.

    For each served row, Feast's offline store answers what the features were for that
    entity at that time; a column skews when the drift test tells the two apart or too
    many rows differ. Exit 1 and a `skew` alert to the webhooks when any column skews.
    """
    from evertrain.exceptions import UsageError
    from evertrain.faces.integrations.feast import alert_skew, check_skew
    from evertrain.spec import load_spec, parse_duration

    try:
        window = parse_duration(last)
    except ValueError as exc:
        raise UsageError(f"--last: {exc}") from None
    spec = load_spec(project)
    store = open_store(project)
    until = store.clock()
    report = check_skew(store, spec, project, since=until - window, until=until, max_mismatch=max_mismatch)
    if report.skewed_columns:
        alert_skew(spec, report)
    if as_json:
        write_json(as_json, report.to_dict())
    if as_json is None or str(as_json) != "-":
        for name, col in report.columns.items():
            verdict = "[bold red]skew[/]" if col["skewed"] else "ok"
            console.print(
                f"{name}: {verdict} (drift test {'differs' if col['drifted'] else 'same'}, "
                f"{col['mismatch_share']:.1%} of rows differ)"
            )
        console.print(
            f"{report.n_rows} served row(s) of the last {last}: "
            + (f"skew in {', '.join(report.skewed_columns)}" if report.skewed_columns else "no skew")
        )
    if report.skewed_columns:
        raise typer.Exit(1)
