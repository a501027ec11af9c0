"""Metadata tables and the database handle.

SQLite (WAL, busy timeout, ``BEGIN IMMEDIATE`` for writes) by default, PostgreSQL by URL.
The tables are declared once here; Alembic migrations in ``migrations/`` create them,
and a test checks that a migrated database and ``metadata.create_all`` agree.

Times are stored as UTC epoch seconds (float): portable across both engines, exact
under round trips, and easy to drive from an injected clock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from evertrain.exceptions import LeaseLostError, StoreError, UsageError
from evertrain.store.retry import Retry

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("framework", sa.String(64), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("code_version", sa.String(64), nullable=True),
    sa.Column("parent_version", sa.Integer, nullable=True),
    sa.Column("trigger", sa.Text, nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("alias", sa.String(32), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    sa.Column("expected_version", sa.Integer, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_alias_history_model_alias", "model_id", "alias", "id"),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("time_column", sa.String(128), nullable=True),
    sa.Column("time_min", sa.Float, nullable=True),
    sa.Column("time_max", sa.Float, nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

snapshot_sources = sa.Table(
    "snapshot_sources",
    metadata,
    sa.Column("snapshot_id", sa.String(64), sa.ForeignKey("snapshots.id"), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
)

version_snapshots = sa.Table(
    "version_snapshots",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
    sa.Column("snapshot_id", sa.String(64), sa.ForeignKey("snapshots.id"), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Index("ix_version_snapshots_snapshot", "snapshot_id"),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("champion_version", sa.Integer, nullable=True),
    sa.Column("snapshot_id", sa.String(64), sa.ForeignKey("snapshots.id"), nullable=True),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_evaluations_version", "version_id"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), nullable=True, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
    sa.Column("parent_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Index("ix_runs_model_kind", "model_id", "kind", "created_at"),
    # Counts by status and the newest times of a model read this index alone (see migration 0003).
    sa.Index("ix_runs_model_status", "model_id", "status", "created_at", "ended_at"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("token", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


rollouts = sa.Table(
    "rollouts",
    metadata,
    # One row per rollout of a candidate version: shadow, then canary steps, then the watch
    # after promotion. Serving replicas read the active row's share; the rollout part moves it.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("baseline", sa.Integer, nullable=True),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("step_started_at", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("last_verdict", sa.JSON, nullable=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Index("ix_rollouts_model_phase", "model_id", "phase", "created_at"),
)


_SQLITE_BUSY_S = 60.0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is off).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_S * 1000)}")
    _sqlite_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_wal(cursor: Any) -> None:
    """Switch the file to WAL (it stays so; later openers find it done).

    The switch needs an exclusive lock, and when two processes open a fresh file
    together SQLite may answer "database is locked" at once instead of calling the
    busy handler; so the switch is retried, for as long as the busy timeout. A file
    already in WAL mode (every open but the first) is recognised by reading the mode,
    which takes no lock.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    Retry(
        attempts=None,
        within=_SQLITE_BUSY_S,
        base_delay=0.005,
        max_delay=0.05,
        retry_on=lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc),
    ).call(lambda: cursor.execute("PRAGMA journal_mode=WAL"))


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that later upgrades
    # to a writer can fail with SQLITE_BUSY without waiting, which would lose a race
    # that the busy timeout was meant to queue.
    mode = "IMMEDIATE" if conn.get_execution_options().get("evertrain_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


_SCHEMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def make_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` URLs use the psycopg 3 driver."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise UsageError(f"metadata store URL {url!r} is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in _SCHEMES:
        known = ", ".join(f"{k}://" for k in _SCHEMES)
        raise UsageError(f"metadata store URL {url!r}: unknown scheme {backend!r}; known: {known}")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)


@dataclass(frozen=True)
class Fence:
    """The lease (and its fencing token) every write transaction must still hold."""

    lease: str
    holder: str
    token: int


def check_fence(conn: Connection, fence: Fence) -> None:
    """Refuse the write transaction ``conn`` unless ``fence``'s lease still has its holder and token.

    The lease row is read with a row lock (PostgreSQL) or inside the write lock (SQLite),
    so the lease cannot change hands between this check and the transaction's commit.
    """
    row = conn.execute(
        sa.select(leases.c.holder, leases.c.token).where(leases.c.name == fence.lease).with_for_update()
    ).first()
    if row is None or row.holder != fence.holder or int(row.token) != fence.token:
        now = "nobody" if row is None else f"{row.holder} (token {row.token})"
        raise LeaseLostError(
            f"lease {fence.lease!r} was lost: {fence.holder} holds token {fence.token}, the store says "
            f"{now}; this write is refused"
        )


MIGRATIONS = Path(__file__).parent / "migrations" / "versions"


def newest_migration() -> str | None:
    """The newest migration's revision, from the file names (``NNNN_what.py`` holds revision ``NNNN``).

    A test holds this equal to Alembic's own head. Should the naming rule ever break, the
    quick check in :meth:`Database.at_head` simply fails and Alembic decides: slower, never wrong.
    """
    numbers = [p.name.split("_", 1)[0] for p in MIGRATIONS.glob("[0-9]*_*.py")]
    return max(numbers) if numbers else None


class Database:
    """One metadata database. Construction opens nothing; ``migrate`` brings the schema up to date."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._local = threading.local()  # the write transaction this thread is in, if any
        #: When set (by a controller holding its lease), every write transaction checks it.
        self.fence: Fence | None = None

    @contextlib.contextmanager
    def unfenced(self) -> Iterator[None]:
        """Writes of this thread that skip the fence: taking, renewing and releasing leases."""
        before = getattr(self._local, "unfenced", False)
        self._local.unfenced = True
        try:
            yield
        finally:
            self._local.unfenced = before

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration (a no-op when it is current).

        A store already at the newest migration is recognised with one query, without
        importing Alembic (which reads every migration script: a large share of a quick
        command's time); anything else goes through Alembic's upgrade.
        """
        if self.at_head():
            return
        from evertrain.store.migrations import upgrade

        try:
            upgrade(self.engine)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot open the metadata store at {self.safe_url}: {exc.orig}") from None

    def at_head(self) -> bool:
        """Whether the schema is at the newest migration, read from Alembic's version table."""
        head = newest_migration()
        if head is None:
            return False
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        except sa.exc.DBAPIError:
            return False  # no version table yet (a fresh store), or it cannot be read: migrate
        return rows == [head]

    @property
    def safe_url(self) -> str:
        from evertrain.store.redact import mask_url

        return mask_url(sa.engine.make_url(self.url).render_as_string(hide_password=True))

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: serialized on SQLite, row-locked where asked on PostgreSQL.

        Nested in another write on the same thread, it joins that transaction, so that
        several store operations (an alias move and the rollout state it implies) commit
        together or not at all.
        """
        outer = self.current_write
        if outer is not None:
            yield outer
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(evertrain_write=True)
            with conn.begin():
                self._local.conn = conn
                try:
                    fence = self.fence
                    if fence is not None and not getattr(self._local, "unfenced", False):
                        check_fence(conn, fence)
                    yield conn
                finally:
                    self._local.conn = None

    @property
    def current_write(self) -> Connection | None:
        """The write transaction this thread is in, if any."""
        return getattr(self._local, "conn", None)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot from its first query to its end.

        SQLite's WAL readers do so already. PostgreSQL's default, READ COMMITTED, takes
        a new snapshot per statement, so a reader of several tables (the audit chain and
        its head, a version and its links) could mix states of a concurrent writer; a
        read-only REPEATABLE READ transaction cannot, and never fails for it.
        """
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
