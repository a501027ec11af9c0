"""Lineage both ways: version -> snapshots -> sources, and snapshot -> every version that used it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evertrain.exceptions import NotFoundError, UsageError
from evertrain.faces.cli import main
from evertrain.store import Store


def snapshot(store: Store, rows: str, *sources: str) -> str:
    digest = store.artifacts.put(rows.encode())
    store.lineage.record_snapshot(
        digest,
        n_rows=rows.count("\n") - 1,  # less the header
        schema={"x": "float64", "y": "int64"},
        size_bytes=len(rows),
        sources=sources,
        time_column="ts",
        time_min=1.0,
        time_max=2.0,
    )
    return digest


def test_a_version_knows_its_data_and_the_data_knows_its_versions(store: Store) -> None:
    train = snapshot(store, "x,y\n1,0\n2,1\n", "s3://bucket/events/2026-01.parquet")
    holdout = snapshot(store, "x,y\n3,1\n", "s3://bucket/events/2026-02.parquet")
    model = store.artifacts.put(b"{}")
    v1 = store.registry.register("m", model, framework="json", actor="a", snapshots=[(train, "train")])
    store.registry.register(
        "m", model, framework="json", actor="a", parent=1, snapshots=[(train, "train"), (holdout, "holdout")]
    )
    v3 = store.registry.register("m", model, framework="json", actor="a", parent=2)
    store.lineage.record_evaluation(
        "m", 2, passed=True, report={"auc": 0.9}, actor="gate", champion_version=1, snapshot_id=holdout
    )

    info = store.lineage.of_version("m", 2)
    assert (info["model"], info["version"], info["parent"]) == ("m", 2, 1)
    roles = {s["role"]: s for s in info["snapshots"]}
    assert set(roles) == {"train", "holdout"}
    assert roles["train"]["sources"] == ["s3://bucket/events/2026-01.parquet"]
    assert (roles["holdout"]["n_rows"], roles["holdout"]["time_column"]) == (1, "ts")
    assert [(g["passed"], g["champion_version"], g["snapshot"]) for g in info["gates"]] == [
        (True, 1, holdout)
    ]
    assert store.lineage.of_version("m", v3.version)["ancestors"] == [2, 1]
    assert v1.to_dict()["snapshot"] == train

    uses = store.lineage.of_snapshot(train)["versions"]
    assert uses == [
        {"model": "m", "version": 1, "role": "train"},
        {"model": "m", "version": 2, "role": "train"},
    ]
    judged = store.lineage.of_snapshot(holdout)["versions"]
    assert {"model": "m", "version": 2, "role": "eval"} in judged
    assert {"model": "m", "version": 2, "role": "holdout"} in judged
    assert [e.action for e in store.audit.entries()][-1] == "gate"


def test_recording_a_snapshot_twice_only_adds_sources(store: Store) -> None:
    first = snapshot(store, "a\n1\n", "one.csv")
    again = snapshot(store, "a\n1\n", "two.csv", "one.csv")
    assert first == again
    assert store.lineage.of_snapshot(first)["sources"] == ["one.csv", "two.csv"]


def test_a_snapshot_must_be_stored_before_it_is_recorded(store: Store) -> None:
    with pytest.raises(NotFoundError, match="artifact store"):
        store.lineage.record_snapshot("ab" * 32, n_rows=1, schema={}, size_bytes=1)
    with pytest.raises(UsageError):
        store.lineage.record_snapshot("../x", n_rows=1, schema={}, size_bytes=1)
    with pytest.raises(NotFoundError):
        store.lineage.of_snapshot("ab" * 32)


def test_the_lineage_command_shows_snapshots_and_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.for_project(tmp_path) as store:
        train = snapshot(store, "x\n1\n", "events.parquet")
        model = store.artifacts.put(b"{}")
        store.registry.register("m", model, framework="json", actor="a", snapshots=[(train, "train")])
        store.lineage.record_evaluation("m", 1, passed=False, report={}, actor="gate")
    (tmp_path / "evertrain.yaml").write_text(
        "model: {name: m, target: y}\ndata: {source: {kind: csv, path: d.csv}}\n"
    )
    capsys.readouterr()
    assert main(["lineage", "m", "1", "--json", "--project", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(s["id"], s["role"], s["sources"]) for s in info["snapshots"]] == [
        (train, "train", ["events.parquet"])
    ]
    assert [g["passed"] for g in info["gates"]] == [False]
    assert main(["lineage", "m", "1", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "events.parquet" in out and "FAILED" in out
    assert main(["versions", "m", "--json", "--project", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["versions"][0]["snapshot"] == train
