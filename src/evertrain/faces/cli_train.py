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

from evertrain.exceptions import DataValidationError, EvertrainError, GateFailed, UsageError
from evertrain.faces._common import (
    SPEC_FILE,
    JsonOpt,
    ProjectOpt,
    console,
    open_store,
    require_project,
    write_json,
)
from evertrain.faces.cli_app import app
from evertrain.faces.interrupt import on_interrupt, progress_line
from evertrain.spec import Spec, load_spec
from evertrain.store.names import check_model_name, parse_version

#: Characters of an error shown in the runs table (``--wide`` and the JSON have all of it).
ERROR_WIDTH = 60
#: The run kind of a training (see :mod:`evertrain.train.stages`).
TRAIN_KIND = "train"


def _spec_for(project: Path, model: str) -> Spec:
    check_model_name(model)
    spec = load_spec(require_project(project))
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
    as_json: JsonOpt = None,
) -> None:
    """Train MODEL on a fresh window, register the version and check its gates."""
    from evertrain.train.pipeline import train_model

    spec = _spec_for(project, model)
    store = open_store(project)
    stopped = f"training of {model} stopped; its run stays recorded and `evertrain train` starts anew"
    with on_interrupt(stopped), progress_line(f"training {model}", as_json is not None) as progress:
        result = train_model(
            store,
            spec,
            project,
            reason=reason,
            trigger="manual",
            key=key,
            executor=executor,
            progress=progress,
        )
    if as_json:
        write_json(as_json, result.to_dict())
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
    as_json: JsonOpt = None,
) -> None:
    """Check VERSION's gates against the champion on its holdout rows; exit 1 if a gate fails."""
    from evertrain.evaluate.evaluation import CURRENT_CHAMPION, evaluate_version

    spec = _spec_for(project, model)
    number = parse_version(version)
    against: Any = CURRENT_CHAMPION
    if champion is not None:
        against = None if champion.lower() == "none" else parse_version(champion)
    store = open_store(project)
    _check_features(store, spec, model, number)
    try:
        report = evaluate_version(
            store, spec, model, number, project=project, champion=against, record=record
        )
    except EvertrainError:
        raise
    except Exception as exc:  # the model met rows it cannot score: name it, in one line
        raise DataValidationError(
            f"model {model!r} version {number} cannot be scored on this project's data: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from None
    data = report.to_dict()
    if as_json:
        write_json(as_json, data)
    else:
        _print_checks(data)
    if not report.passed:
        raise GateFailed(f"model {model!r} version {number} failed its gates: {report.reason}")


def _check_features(store: Any, spec: Spec, model: str, version: int) -> None:
    """Refuse, naming both lists, a version whose features are not the ones evertrain.yaml lists."""
    from evertrain.evaluate.scoring import load_model

    if not spec.model.features:
        return
    estimator = load_model(store, store.registry.get_version(model, version), spec.model.trusted_types)
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and set(map(str, names)) != set(spec.model.features):
        raise DataValidationError(
            f"model {model!r} version {version} takes features {sorted(map(str, names))}, "
            f"but evertrain.yaml lists {sorted(spec.model.features)}"
        )


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


#: Trainings the default ``runs`` table shows (the newest); ``--all`` shows every run.
SHORT_ROWS = 20


@app.command()
def runs(
    model: Annotated[str, typer.Argument(help="Model name.")],
    kind: Annotated[
        str | None, typer.Option(help="Only runs of this kind (train, trial, cycle, decision, ...).")
    ] = None,
    all_runs: Annotated[
        bool,
        typer.Option("--all", help=f"Every run of every kind, not only the newest {SHORT_ROWS} trainings."),
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column: run kind, parameters that differ, full errors.")
    ] = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """List MODEL's trainings (failed and rejected ones too) and what differs between them.

    By default a short table of the newest trainings; ``--all`` lists every run (cycles,
    decisions, sweep trials), ``--wide`` adds the parameters that differ and whole errors.
    ``--json`` holds every run of the kinds asked, with all fields.
    """
    check_model_name(model)
    store = open_store(project)
    wanted = kind if kind is not None else (None if all_runs else TRAIN_KIND)
    rows = [_run_row(r) for r in store.runs.list(model=model, kind=wanted)]
    varying = varying_params(rows)
    if as_json:
        write_json(as_json, {"model": model, "runs": rows, "varying_params": varying})
        return
    if not rows:
        what = "runs" if wanted is None else f"{wanted} runs"
        console.print(f"no {what} of model {model!r} yet")
        return
    shown = rows if all_runs else rows[-SHORT_ROWS:]
    table = Table(
        title=f"{model}: {'runs' if wanted is None else 'trainings' if wanted == TRAIN_KIND else wanted}"
    )
    extra = varying if wide else []
    columns = [
        "run",
        *(["kind"] if wide or wanted != TRAIN_KIND else []),
        "status",
        "version",
        "started",
        "seconds",
    ]
    for col in (*columns, *extra, "holdout / error"):
        table.add_column(col, overflow="fold", min_width=8 if col == "run" else None)
    for row in shown:
        flat = _flat(row["params"])
        holdout = row["metrics"].get("holdout") or {}
        if wide:
            status = row["status"] if row["outcome"] is None else f"{row['status']}: {row['outcome']}"
        else:
            status = row["outcome"] or row["status"]
        error = row["error"] or ""
        detail = (error if wide else error.splitlines()[0][:ERROR_WIDTH] if error else "") or ", ".join(
            f"{k} {_fmt(v)}" for k, v in list(holdout.items())[: None if wide else 1]
        )
        started = row["created_at"][:16].replace("T", " ")
        cells = [row["id"][:8]]
        if "kind" in columns:
            cells.append(row["kind"])
        cells += [
            status,
            _fmt(row["version"]),
            started if wide else started[5:],
            _fmt_seconds(row["seconds"]),
        ]
        table.add_row(*cells, *(flat.get(k, "-") for k in extra), detail)
    console.print(table)
    hidden = len(rows) - len(shown)
    if hidden:
        console.print(f"{hidden} older run(s) not shown; --all lists them, --json holds them all")


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


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
    base_model = EXAMPLES[example].base_model
    if base_model is not None:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UsageError(
                f"example {example!r} needs the llm extra: pip install 'evertrain[llm]'"
            ) from None
    try:
        write_project(folder, example)
        if base_model is not None:
            from evertrain.data.tickets import pretraining_text
            from evertrain.train.tiny_base import build_tiny_base

            console.print(f"building a tiny base language model in {folder / base_model} ...")
            build_tiny_base(folder / base_model, pretraining_text(800), pretrain_steps=40)
    except OSError as exc:
        raise UsageError(f"cannot write the project into {folder}: {exc.strerror or exc}") from None
    spec = load_spec(folder)
    console.print(
        f"wrote {folder / SPEC_FILE} and {folder / EXAMPLES[example].data_file}: "
        f"{EXAMPLES[example].description}"
    )
    console.print(f"next: evertrain train {spec.model.name} --project {folder}")
