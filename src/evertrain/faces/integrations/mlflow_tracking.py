"""Mirror a model's trainings, metrics, gate verdicts and alias moves to an MLflow tracking server.

evertrain's store stays the record; the mirror copies what is in it, so it can run after
every cycle (``tracking.mlflow_uri`` in the project file) or by hand (``evertrain mlflow
sync``) and catches up on whatever it missed while the server was down. Every write is
keyed, so a second sync adds nothing:

- each training (``evertrain runs``) is an MLflow run tagged ``evertrain.run_id``, named
  ``<model>-v<N>`` when it made version N (else ``<model>-training``), with the version's
  params and metrics and the run's status (FAILED for a failed training);
- the newest gate verdict of a version is on its run as tags: ``evertrain.gate``
  (passed/failed), ``evertrain.gate.reason``, one ``evertrain.gate.<i>.<kind>`` per check;
- alias moves are the metrics ``champion``, ``canary`` and ``shadow`` (the version the
  alias points at, 0 for none) of one run named ``<model>-aliases``, one step per move,
  at the move's time; each version's run carries ``evertrain.aliases``, the aliases on it now.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from evertrain.exceptions import NotFoundError
from evertrain.faces.integrations.mlflow import require_mlflow
from evertrain.store import Store

RUN_TAG = "evertrain.run_id"
ALIASES_RUN = "aliases"
MOVES_TAG = "evertrain.moves_mirrored"
_PARAM_MAX = 500  # characters of one param value MLflow accepts everywhere


@dataclass
class SyncResult:
    experiment_id: str
    runs_created: int = 0
    gates: int = 0
    moves: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _client(uri: str) -> Any:
    # A tracking server that is down must fail fast: the next cycle syncs again.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    mlflow = require_mlflow()
    return mlflow.MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, tags={"evertrain": "true"}))


def _flat(prefix: str, value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text[:_PARAM_MAX]


def sync(store: Store, model: str, uri: str, experiment: str | None = None) -> SyncResult:
    """Copy what the store knows about ``model`` that the tracking server lacks; returns the counts.

    MLflow prints links to the runs it ends; they go to stderr, so that standard output
    stays the command's own (``--json``).
    """
    with contextlib.redirect_stdout(sys.stderr):
        return _sync(store, model, uri, experiment)


def _sync(store: Store, model: str, uri: str, experiment: str | None) -> SyncResult:
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    exp = _experiment(client, experiment or f"evertrain-{model}")
    result = SyncResult(exp)
    existing = {
        r.data.tags.get(RUN_TAG): r
        for r in client.search_runs([exp], max_results=5000)
        if r.data.tags.get(RUN_TAG)
    }
    try:
        listed = store.registry.list_versions(model)
    except NotFoundError:  # no version yet: trainings that failed are still mirrored
        listed = []
    versions = {mv.run_id: mv for mv in listed if mv.run_id}
    run_of_version: dict[int, str] = {}
    for run in sorted(store.runs.list(model=model, kind="train"), key=lambda r: r.created_at):
        if run.status == "running":
            continue  # mirrored once it ends
        mv = versions.get(run.id)
        mirrored = existing.get(run.id)
        if mirrored is None:
            name = f"{model}-v{mv.version}" if mv is not None else f"{model}-training"
            tags = {RUN_TAG: run.id, "evertrain.model": model, "mlflow.runName": name}
            if mv is not None:
                tags["evertrain.version"] = str(mv.version)
            created = client.create_run(exp, start_time=int(run.created_at * 1000), tags=tags, run_name=name)
            run_id = created.info.run_id
            params = {"evertrain.status": run.status}
            metrics = {k: v for k, v in run.metrics.items() if _number(v)}
            if mv is not None:
                params.update(
                    {"framework": mv.framework, "trigger": mv.trigger or "", "sha256": mv.artifact_sha256}
                )
                params.update({f"param.{k}": _flat(k, v) for k, v in mv.params.items()})
                metrics.update({k: v for k, v in mv.metrics.items() if _number(v)})
            at = int((run.ended_at or run.created_at) * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric(k[:250], float(v), at, 0) for k, v in sorted(metrics.items())],
                params=[Param(k[:250], _flat(k, v)) for k, v in sorted(params.items())],
                tags=[RunTag("evertrain.error", (run.error or "")[:5000])] if run.error else [],
            )
            client.set_terminated(
                run_id, status="FINISHED" if run.status == "succeeded" else "FAILED", end_time=at
            )
            result.runs_created += 1
        else:
            run_id = mirrored.info.run_id
        if mv is not None:
            run_of_version[mv.version] = run_id
    for number, run_id in run_of_version.items():
        evaluations = store.lineage.evaluations(model, number)
        if evaluations:
            _gate_tags(client, run_id, evaluations[-1])
            result.gates += 1
    if listed:
        result.moves = _aliases(client, store, model, exp, existing, run_of_version)
    return result


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _gate_tags(client: Any, run_id: str, evaluation: dict[str, Any]) -> None:
    report = evaluation.get("report") or {}
    client.set_tag(run_id, "evertrain.gate", "passed" if evaluation["passed"] else "failed")
    client.set_tag(run_id, "evertrain.gate.reason", str(report.get("reason") or "")[:5000])
    champion = evaluation.get("champion_version")
    client.set_tag(run_id, "evertrain.gate.champion", "" if champion is None else str(champion))
    for i, check in enumerate(report.get("checks") or []):
        verdict = "pass" if check.get("passed") else "FAIL"
        client.set_tag(
            run_id,
            f"evertrain.gate.{i}.{check.get('kind', 'check')}",
            f"{verdict}: {check.get('reason', '')}"[:5000],
        )


def _aliases(
    client: Any, store: Store, model: str, exp: str, existing: dict[str, Any], run_of_version: dict[int, str]
) -> int:
    """Alias moves as metrics of the aliases run (only the new ones), and each version's aliases now."""
    from mlflow.entities import Metric

    key = f"{model}/{ALIASES_RUN}"
    holder = existing.get(key)
    if holder is None:
        holder = client.create_run(
            exp, tags={RUN_TAG: key, "evertrain.model": model}, run_name=f"{model}-{ALIASES_RUN}"
        )
    run_id = holder.info.run_id
    done = int(client.get_run(run_id).data.tags.get(MOVES_TAG, "0"))
    moves = [m for m in store.registry.history(model) if m.outcome == "applied"]
    new = moves[done:]
    if new:
        metrics = [
            Metric(m.alias, float(m.to_version or 0), int(m.at * 1000), done + i) for i, m in enumerate(new)
        ]
        client.log_batch(run_id, metrics=metrics)
        client.set_tag(run_id, MOVES_TAG, str(len(moves)))
        client.set_terminated(run_id, end_time=int(new[-1].at * 1000))
    now = store.registry.get_aliases(model)
    for number, version_run in run_of_version.items():
        on = sorted(alias for alias, v in now.items() if v == number)
        client.set_tag(version_run, "evertrain.aliases", ",".join(on))
    return len(new)


__all__ = ["SyncResult", "sync"]
