"""The schema: Alembic builds what the table declarations say, once, even under a race."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from store_procs import Worker, race

from evertrain.store import Store
from evertrain.store.metadata import make_engine, metadata
from evertrain.store.migrations import current_revision, head_revision


def schema_of(url: str) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them (Alembic's own table left out)."""
    engine = make_engine(url)
    try:
        inspector = sa.inspect(engine)
        out: dict[str, Any] = {}
        for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
            out[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("autoincrement"))
                    for c in inspector.get_columns(table)
                ],
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "fks": sorted(
                    (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
                    for fk in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                    for ix in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    (uq["name"], tuple(uq["column_names"])) for uq in inspector.get_unique_constraints(table)
                ),
            }
        return out
    finally:
        engine.dispose()


def test_migrated_database_matches_the_declared_tables(new_db_url: Callable[[], str], tmp_path: Path) -> None:
    migrated_url, declared_url = new_db_url(), new_db_url()
    Store(migrated_url, str(tmp_path / "a")).open().close()
    engine = make_engine(declared_url)
    metadata.create_all(engine)
    engine.dispose()

    migrated = make_engine(migrated_url)
    try:
        with migrated.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        migrated.dispose()
    assert diff == []
    assert schema_of(migrated_url) == schema_of(declared_url)
    assert set(schema_of(migrated_url)) == set(metadata.tables)


def test_constructing_a_store_touches_nothing(tmp_path: Path) -> None:
    db = tmp_path / "meta" / "evertrain.db"
    Store(f"sqlite:///{db}", str(tmp_path / "art"))
    assert not db.exists()
    assert list(tmp_path.iterdir()) == []


def test_opening_twice_changes_nothing(db_url: str, artifacts_url: str) -> None:
    with Store(db_url, artifacts_url) as first:
        digest = first.artifacts.put(b"{}")
        first.registry.register("m", digest, framework="json", actor="t")
    before = schema_of(db_url)
    with Store(db_url, artifacts_url) as second:
        assert [v.version for v in second.registry.list_versions("m")] == [1]
        assert current_revision(second.db.engine) == head_revision()
    assert schema_of(db_url) == before


def test_two_processes_opening_a_fresh_store_at_once_both_succeed(
    backend: str, new_db_url: Callable[[], str], tmp_path: Path, workers: Callable[[], Worker]
) -> None:
    pair = [workers(), workers()]
    # SQLite's race (switching a new file to WAL) shows up only now and then: more rounds.
    for round_ in range(24 if backend == "sqlite" else 6):
        url, art = new_db_url(), str(tmp_path / f"art-{round_}")
        answers = race(pair, [["open", url, art], ["open", url, art]], first=round_ % 2)
        assert answers == [{"ok": True}, {"ok": True}]
        engine = make_engine(url)
        try:
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
        assert set(schema_of(url)) == set(metadata.tables)


def test_a_store_made_before_the_runs_status_index_gains_it_on_open(
    backend: str, new_db_url: Callable[[], str], tmp_path: Path
) -> None:
    from evertrain.faces import status_reads
    from evertrain.store.metadata import models, runs
    from evertrain.store.migrations import upgrade

    url, fresh_url = new_db_url(), new_db_url()
    engine = make_engine(url)
    try:
        upgrade(engine, "0002")  # the schema as a store of the previous release has it
        assert "ix_runs_model_status" not in {ix["name"] for ix in sa.inspect(engine).get_indexes("runs")}
        with engine.begin() as conn:
            conn.execute(sa.insert(models).values(id=1, name="m", created_at=1.0))
            conn.execute(
                sa.insert(runs),
                [
                    {
                        "id": f"r{i}",
                        "key": None,
                        "kind": "train",
                        "model_id": 1,
                        "parent_id": None,
                        "status": "failed" if i % 3 == 0 else "succeeded",
                        "params": {},
                        "metrics": {},
                        "result": None,
                        "error": "ValueError: no rows" if i % 3 == 0 else None,
                        "created_at": float(i),
                        "started_at": float(i),
                        "ended_at": float(i) + 0.5,
                        "heartbeat_at": None,
                    }
                    for i in range(30)
                ],
            )
    finally:
        engine.dispose()

    with Store(url, str(tmp_path / "art")) as store:  # opening migrates it
        assert current_revision(store.db.engine) == head_revision()
        (overview,) = status_reads.models_overview(store)
        assert (overview["n_runs"], overview["n_failed"], overview["last_activity"]) == (30, 10, 29)
        failed = status_reads.runs_page(store, "m", status="failed", limit=5)
        assert failed["total"] == 10
        assert [r["id"] for r in failed["runs"]] == ["r27", "r24", "r21", "r18", "r15"]
        if backend == "sqlite":  # the count of failed runs reads the index alone, not the table
            query = "SELECT count(*) FROM runs WHERE model_id = 1 AND status = 'failed'"
            with store.db.engine.connect() as conn:
                plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))
            assert "COVERING INDEX ix_runs_model_status" in plan, plan
    Store(fresh_url, str(tmp_path / "fresh")).open().close()
    assert schema_of(url) == schema_of(fresh_url)
