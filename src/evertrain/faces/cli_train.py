"""Training commands: ``train``, ``evaluate``, ``runs`` and ``init``.

``train`` and ``evaluate`` exit 1 when the gates reject the version (it stays
registered, with its report in lineage), 2 on bad input, 0 otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evertrain.exceptions import GateFailed, UsageError
from evertrain.faces._common import JsonFlag, ProjectOpt, console, open_store, print_json
from evertrain.faces.cli_app import app
from evertrain.faces.interrupt import elapsed, on_interrupt
from evertrain.spec import SPEC_FILE, Spec, load_spec
from evertrain.store.names import check_model_name, parse_version

#: Characters of an error shown in the runs table (the JSON has all of it).
ERROR_WIDTH = 60


def _spec_for(project: Path, model: str) -> Spec:
    check_model_name(model)
    spec = load_spec(project)
    if spec.model.name != model:
        raise UsageError(f"{project / SPEC_FILE} describes model {spec.model.name!r}, not {model!r}")
    return spec


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _print_checks(report: dict[str, Any]) -> None:
    table = Table(
        title=f"{report['model']} v{report['version']} vs champion {report['champion_version'] or '-'}"
    )
    for col in ("gate", "result", "evidence"):
        table.add_column(col)
    for check in report["checks"]:
        table.add_row(check["name"], "pass" if check["passed"] else "[bold red]FAIL[/]", check["reason"])
    if report["checks"]:
        console.print(table)
    console.print(f"{'passed' if report['passed'] else 'FAILED'}: {report['reason']}")


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name (as in evertrain.yaml).")],
    reason: Annotated[
        str | None, typer.Option(help="Why this training happens (kept in the audit log).")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Idempotency key: a rerun with the same key resumes or returns that step."),
    ] = None,
    executor: Annotated[str | None, typer.Option(help="inline, local or ray (default: the spec's).")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Train MODEL on a fresh window, register the version and check its gates."""
    from evertrain.train.pipeline import train_model

    spec = _spec_for(project, model)
    store = open_store(project)
    stopped = f"training of {model} stopped; its run stays recorded and `evertrain train` starts anew"
    with on_interrupt(stopped), elapsed(f"training {model}", as_json):
        result = train_model(
            store, spec, project, reason=reason, trigger="manual", key=key, executor=executor
        )
    if as_json:
        print_json(result.to_dict())
    else:
        resumed = " (resumed)" if result.resumed else ""
        console.print(
            f"trained [bold]{model}[/] version [bold]{result.version}[/]{resumed} in run {result.run_id[:8]}"
        )
        for name, value in (result.metrics.get("holdout") or {}).items():
            console.print(f"  holdout {name}: {_fmt(value)}")
        if result.report is not None and "checks" in result.report:
            _print_checks(result.report)
    if result.outcome == "rejected":
        why = (result.report or {}).get("reason")
        raise GateFailed(f"model {model!r} version {result.version} failed its gates: {why}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    champion: Annotated[
        str | None,
        typer.Option(help="Version to compare with (default: the current champion; 'none': nobody)."),
    ] = None,
    record: Annotated[bool, typer.Option(help="Store the report in lineage and the audit log.")] = True,
    project: ProjectOpt = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Check VERSION's gates against the champion on its holdout rows; exit 1 if a gate fails."""
    from evertrain.evaluate.evaluation import CURRENT_CHAMPION, evaluate_version

    spec = _spec_for(project, model)
    number = parse_version(version)
    against: Any = CURRENT_CHAMPION
    if champion is not None:
        against = None if champion.lower() == "none" else parse_version(champion)
    store = open_store(project)
    report = evaluate_version(store, spec, model, number, project=project, champion=against, record=record)
    data = report.to_dict()
    if as_json:
        print_json(data)
    else:
        _print_checks(data)
    if not report.passed:
        raise GateFailed(f"model {model!r} version {number} failed its gates: {report.reason}")


def _run_row(run: Any) -> dict[str, Any]:
    result = run.result or {}
    seconds = None if run.ended_at is None or run.started_at is None else run.ended_at - run.started_at
    return {
        "id": run.id,
        "key": run.key,
        "kind": run.kind,
        "parent_id": run.parent_id,
        "status": run.status,
        "outcome": result.get("outcome"),
        "version": result.get("version"),
        "created_at": dt.datetime.fromtimestamp(run.created_at, dt.UTC).isoformat(),
        "seconds": seconds,
        "params": run.params,
        "metrics": run.metrics,
        "timings": result.get("timings"),
        "error": run.error,
    }


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def varying_params(rows: list[dict[str, Any]]) -> list[str]:
    """Parameters (flattened, cut-off and timestamps aside) whose values differ between runs."""
    flats = [_flat(r["params"]) for r in rows]
    keys = sorted({k for f in flats for k in f} - {"cutoff", "code_version", "spec_sha256", "reason"})
    return [k for k in keys if len({f.get(k) for f in flats}) > 1]


@app.command()
def runs(
    model: Annotated[str, typer.Argument(help="Model name.")],
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind (train, trial, ...).")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """List MODEL's training attempts (failed and rejected ones too) and what differs between them."""
    check_model_name(model)
    store = open_store(project)
    rows = [_run_row(r) for r in store.runs.list(model=model, kind=kind)]
    varying = varying_params(rows)
    if as_json:
        print_json({"model": model, "runs": rows, "varying_params": varying})
        return
    if not rows:
        console.print(f"no runs of model {model!r} yet")
        return
    table = Table(title=f"{model}: runs")
    for col in ("run", "kind", "status", "version", "started", "seconds", *varying, "holdout / error"):
        table.add_column(col)
    for row in rows:
        flat = _flat(row["params"])
        holdout = row["metrics"].get("holdout") or {}
        status = row["status"] if row["outcome"] is None else f"{row['status']}: {row['outcome']}"
        detail = (row["error"] or "")[:ERROR_WIDTH] or ", ".join(
            f"{k} {_fmt(v)}" for k, v in list(holdout.items())[:2]
        )
        table.add_row(
            row["id"][:8],
            row["kind"],
            status,
            _fmt(row["version"]),
            row["created_at"][:16].replace("T", " "),
            _fmt(row["seconds"]),
            *(flat.get(k, "-") for k in varying),
            detail,
        )
    console.print(table)


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")],
    example: Annotated[str, typer.Option(help="Which example project to write.")] = "churn",
    force: Annotated[bool, typer.Option(help="Overwrite an existing evertrain.yaml.")] = False,
) -> None:
    """Write a runnable project: evertrain.yaml and a small generated data set."""
    from evertrain.data.examples import EXAMPLES, write_project

    if example not in EXAMPLES:
        raise UsageError(f"unknown example {example!r}; known: {', '.join(sorted(EXAMPLES))}")
    if (folder / SPEC_FILE).exists() and not force:
        raise UsageError(f"{folder / SPEC_FILE} already exists; pass --force to overwrite it")
    write_project(folder, example)
    spec = load_spec(folder)
    console.print(
        f"wrote {folder / SPEC_FILE} and {folder / EXAMPLES[example].data_file}: "
        f"{EXAMPLES[example].description}"
    )
    console.print(f"next: evertrain train {spec.model.name} --project {folder}")
