"""Alembic migrations of the metadata store, run on first open or by ``evertrain`` commands.

Never run at import or construction. ``upgrade`` takes a lock first (``BEGIN IMMEDIATE``
on SQLite, an advisory lock on PostgreSQL) so that two processes opening a fresh store
at once do not both create it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

_HERE = Path(__file__).parent
_PG_LOCK_KEY = 0x65766572  # "ever": one advisory lock id for schema changes


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    head = head_revision()
    if revision == "head" and current_revision(engine) == head:
        return
    cfg = config()
    with engine.connect() as conn:
        conn = conn.execution_options(evertrain_write=True)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
