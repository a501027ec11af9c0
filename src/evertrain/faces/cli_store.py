"""Registry and audit commands: register, versions, promote, rollback, lineage, audit, status."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evertrain import settings
from evertrain.exceptions import CheckFailed, UsageError
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
from evertrain.faces.status import status_data
from evertrain.store.names import CANARY, CHAMPION, check_model_name, parse_version

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


@app.command()
def register(
    model: Annotated[str, typer.Argument(help="Model name (as in evertrain.yaml).")],
    file: Annotated[
        Path, typer.Argument(help="The model file (.skops, LightGBM text, .safetensors, .json).")
    ],
    framework: Annotated[
        str | None, typer.Option(help="Format of FILE; inferred from its suffix if omitted.")
    ] = None,
    metrics: Annotated[str | None, typer.Option(help='Metrics as a JSON object, e.g. {"auc": 0.91}.')] = None,
    reason: Annotated[str | None, typer.Option(help="Why this version is registered.")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Register a model file you trained yourself as a new version.

    The file is loaded with its safe format and must predict on a sample of the
    project's own data with the project's features; anything else is refused (exit 2)
    before a version exists.
    """
    from evertrain.store.formats import infer_framework

    check_model_name(model)
    require_project(project)
    parsed = _metrics(metrics)
    if not file.is_file():
        raise UsageError(f"model file {file} does not exist")
    register_bytes(
        project,
        model,
        file.read_bytes(),
        framework or infer_framework(file),
        what=f"model file {file.name}",
        metrics=parsed,
        params={"source_file": file.name},
        reason=reason or f"registered from {file.name}",
        as_json=as_json,
    )


def register_bytes(
    project: Path,
    model: str,
    data: bytes,
    fw: str,
    *,
    what: str,
    metrics: dict[str, Any],
    params: dict[str, Any],
    reason: str,
    as_json: Path | None,
) -> None:
    """Register ``data`` (a model in the safe format ``fw``) as a new version of ``model`` and say so.

    The model is loaded with its format and must predict on a sample of the project's own
    data with the project's features before a version exists (``evertrain register`` and
    ``evertrain mlflow import``).
    """
    from evertrain.spec import load_spec
    from evertrain.store.formats import get_format
    from evertrain.train.servable import check_servable

    spec = load_spec(project)
    if spec.model.name != model:
        raise UsageError(f"evertrain.yaml describes model {spec.model.name!r}, not {model!r}")
    options = {"trusted": spec.model.trusted_types} if fw == "sklearn" and spec.model.trusted_types else {}
    loaded = get_format(fw, **options).loads(data)  # refuse a file that is not what it claims
    from evertrain.train.provenance import git_commit

    store = open_store(project)
    checked = check_servable(loaded, spec, project, what=what, logs_url=settings.logs_url(project))
    digest = store.artifacts.put(data)
    mv = store.registry.register(
        model,
        digest,
        framework=fw,
        actor=settings.actor(),
        metrics=metrics,
        params=params,
        trigger="manual",
        code_version=git_commit(project),
        reason=reason,
    )
    if as_json:
        write_json(as_json, {**mv.to_dict(), "checked_rows": checked})
    else:
        on = (
            f"predicts on {checked} rows of the project's data"
            if checked
            else "no project rows yet to predict on"
        )
        console.print(
            f"registered [bold]{model}[/] version [bold]{mv.version}[/] ({fw}, sha256 {digest[:12]}; {on})"
        )


def _metrics(text: str | None) -> dict[str, Any]:
    """``--metrics``: a flat JSON object of names to numbers (or short strings)."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise UsageError("--metrics is nested too deeply; give a flat JSON object") from None
    except ValueError as exc:
        raise UsageError(f"--metrics is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"--metrics must be a JSON object, got {type(parsed).__name__}")
    nested = [k for k, v in parsed.items() if isinstance(v, dict | list)]
    if nested:
        raise UsageError(
            f"--metrics must map names to numbers; {nested[0]!r} holds a {type(parsed[nested[0]]).__name__}"
        )
    return parsed


def _version_json(v: Any) -> dict[str, Any]:
    d = v.to_dict()
    d["created_at"] = _iso(v.created_at)
    return d


@app.command()
def versions(model: str, project: ProjectOpt = Path("."), as_json: JsonOpt = None) -> None:
    """List the versions of MODEL."""
    check_model_name(model)
    store = open_store(project)
    items = store.registry.list_versions(model)
    aliases = store.registry.get_aliases(model)
    if as_json:
        write_json(
            as_json, {"model": model, "aliases": aliases, "versions": [_version_json(v) for v in items]}
        )
        return
    held: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        if version is not None:
            held.setdefault(version, []).append(alias)
    table = Table(title=f"{model}: versions")
    for col in ("version", "aliases", "created", "framework", "trigger", "parent", "metrics"):
        table.add_column(col)
    for v in items:
        table.add_row(
            str(v.version),
            ", ".join(sorted(held.get(v.version, []))),
            _when(v.created_at),
            v.framework,
            v.trigger or "-",
            str(v.parent or "-"),
            ", ".join(
                f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in v.metrics.items()
            ),
        )
    console.print(table)


@app.command()
def promote(
    model: str,
    version: str,
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    expect: Annotated[
        str | None,
        typer.Option(help="Champion version this promotion expects to replace ('none' if there is none)."),
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Make VERSION the champion of MODEL (compare-and-swap on the champion alias)."""
    check_model_name(model)
    number = parse_version(version)
    kwargs: dict[str, Any] = {}
    if expect is not None:
        kwargs["expected"] = None if expect.lower() == "none" else parse_version(expect)
    store = open_store(project)
    move = store.registry.promote(model, number, actor=settings.actor(), reason=reason, **kwargs)
    if as_json:
        write_json(as_json, dataclasses.asdict(move))
        return
    if move.outcome == "unchanged":
        console.print(f"{model}: version {move.to_version} is already the champion; nothing changed")
        return
    console.print(f"{model}: champion {move.from_version or '-'} -> {move.to_version}")


@app.command()
def rollback(
    model: str,
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = None,
) -> None:
    """Point MODEL's champion back at the champion before it."""
    check_model_name(model)
    store = open_store(project)
    move = store.registry.rollback(model, actor=settings.actor(), reason=reason)
    if as_json:
        write_json(as_json, dataclasses.asdict(move))
        return
    console.print(f"{model}: champion rolled back {move.from_version} -> {move.to_version}")


@app.command()
def lineage(model: str, version: str, project: ProjectOpt = Path("."), as_json: JsonOpt = None) -> None:
    """Where VERSION came from: snapshots and their sources, parent, trigger, gate results."""
    check_model_name(model)
    store = open_store(project)
    info = store.lineage.of_version(model, parse_version(version))
    if as_json:
        write_json(as_json, info)
        return
    console.print(
        f"[bold]{model} v{info['version']}[/]  trigger: {info['trigger'] or '-'}  "
        f"parent: {info['parent'] or '-'}  code: {(info['code_version'] or '-')[:12]}"
    )
    for snap in info["snapshots"]:
        console.print(
            f"  {snap['role']:<8} snapshot {snap['id'][:12]}  {snap['n_rows']} rows  "
            f"from {', '.join(snap['sources']) or '-'}"
        )
    for gate in info["gates"]:
        console.print(
            f"  gate vs champion {gate['champion_version'] or '-'}: "
            f"{'passed' if gate['passed'] else 'FAILED'}"
        )


@audit_app.command("verify")
def audit_verify(project: ProjectOpt = Path("."), as_json: JsonOpt = None) -> None:
    """Recompute the audit chain; exit 1 naming the first altered, removed or reordered entry."""
    store = open_store(project)
    result = store.audit.verify()
    if as_json:
        write_json(as_json, result.__dict__)
    elif result.ok:
        console.print(f"audit chain intact: {result.n_entries} entries")
    if not result.ok:
        raise CheckFailed(f"audit chain broken at entry {result.first_bad_seq}: {result.problem}")


@audit_app.command("show")
def audit_show(
    project: ProjectOpt = Path("."),
    limit: Annotated[int, typer.Option(help="Newest N entries.")] = 50,
    as_json: JsonOpt = None,
) -> None:
    """The newest audit entries."""
    store = open_store(project)
    entries = store.audit.entries(limit=limit)
    if as_json:
        write_json(as_json, [e.__dict__ for e in entries])
        return
    table = Table(title="audit log")
    for col in ("seq", "at", "actor", "action", "subject", "reason"):
        table.add_column(col)
    for e in entries:
        table.add_row(str(e.seq), _when(e.at), e.actor, e.action, e.subject, e.reason or "")
    console.print(table)


def _decision_text(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "-"
    text = f"{decision.get('action')}: {'; '.join(decision.get('reasons', []))}"
    held = decision.get("held") or []
    if decision.get("action") != "retrain" and held:
        text += f" (held: {held[0]})"
    return text


def _configured_model(project: Path) -> str | None:
    """The model name evertrain.yaml gives, read without validating the whole file.

    ``status`` is a glance at the registry: it must answer fast and even when the file
    has a mistake elsewhere (``evertrain spec check`` is the place for those).
    """
    import yaml

    try:
        data = yaml.load((project / SPEC_FILE).read_text(encoding="utf-8"), Loader=_yaml_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) and name else None


def _yaml_loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@app.command()
def status(project: ProjectOpt = Path("."), as_json: JsonOpt = None) -> None:
    """Every model, its champion and canary, last drift, last decision."""
    store = open_store(project)
    data = status_data(store, configured=_configured_model(project))
    if as_json:
        write_json(as_json, data)
        return
    if not data["models"]:
        console.print("no models registered yet")
        return
    table = Table(title="evertrain status")
    for col in (
        "model",
        "versions",
        CHAMPION,
        CANARY,
        "rollout",
        "last drift",
        "last decision",
        "next cycle",
    ):
        table.add_column(col)
    for m in data["models"]:
        decision = m.get("last_decision")
        drift = m.get("last_drift")
        rollout = m.get("rollout") or {}
        table.add_row(
            m["name"],
            str(m["n_versions"]),
            str(m["aliases"][CHAMPION] or "-"),
            str(m["aliases"][CANARY] or "-"),
            f"v{rollout.get('version')} {rollout.get('action')}" if rollout.get("version") else "-",
            (
                f"{drift['share_drifted']:.0%} of columns ({', '.join(drift['drifted_columns'][:3])})"
                if drift and drift.get("share_drifted") is not None
                else "-"
            ),
            _decision_text(decision),
            _when(m.get("next_cycle_at")),
        )
    console.print(table)
    for m in data["models"]:
        if not m["n_versions"]:
            console.print(
                f"{m['name']}: no version yet "
                f"(evertrain train {m['name']}, or evertrain register {m['name']} FILE)"
            )


spec_app = typer.Typer(help="The project file evertrain.yaml.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the JSON Schema of evertrain.yaml (for editors)."""
    from evertrain.spec import json_schema

    write_json(Path("-"), json_schema())


@spec_app.command("check")
def spec_check(project: ProjectOpt = Path(".")) -> None:
    """Validate evertrain.yaml; errors name the file, line and field."""
    from evertrain.spec import load_spec

    spec = load_spec(require_project(project))
    console.print(f"{project / 'evertrain.yaml'}: ok (model {spec.model.name}, {len(spec.gates)} gates)")
