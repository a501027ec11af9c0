"""Fixtures every test shares: a clean environment and a fresh store on each backend.

Each test runs in its own temporary folder with every ``EVERTRAIN_*`` variable removed.
The ``db_url`` and ``store`` fixtures are parametrized over SQLite and PostgreSQL, so a
test that takes them runs on both. PostgreSQL tests get a schema of their own (dropped
afterwards) in the database named by ``TEST_POSTGRES_URL`` (default: the local server's
``test`` database). With ``CI`` set a missing server fails those tests; elsewhere they skip.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console

from evertrain.store import Store


# ``make test`` runs two pytest-xdist workers with ``--dist loadfile``: each test file stays on
# one worker, so module fixtures (an MLflow server, an Airflow home) are built once.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The long files first, so that no worker starts one while the other has nothing left.
    long = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in long)


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_pg_problem: str | bool | None = False  # False: not checked yet; None: reachable; str: why not


def _postgres_problem() -> str | None:
    """Why the PostgreSQL server cannot be used, or None when it can (checked once)."""
    global _pg_problem
    if _pg_problem is False:
        import psycopg

        try:
            with psycopg.connect(POSTGRES_URL, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            _pg_problem = None
        except psycopg.Error as exc:
            _pg_problem = f"PostgreSQL at {POSTGRES_URL} is not reachable: {str(exc).strip()}"
    return _pg_problem  # type: ignore[return-value]


def require_postgres() -> None:
    """Skip (or, with CI set, fail) the calling test when PostgreSQL is not reachable."""
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off"):
        pytest.fail(f"CI is set, so PostgreSQL tests must run: {problem}", pytrace=False)
    pytest.skip(problem)


class PostgresSchemas:
    """Creates throwaway schemas and hands out URLs whose search_path points into them."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._engine = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))

    def new_url(self) -> str:
        schema = f"et_{uuid.uuid4().hex[:16]}"
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        self.created.append(schema)
        sep = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"

    def drop_all(self) -> None:
        with self._engine.begin() as conn:
            for schema in self.created:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self._engine.dispose()


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ``EVERTRAIN_*`` variable leaks in, and the test runs inside its own empty folder."""
    for name in list(os.environ):
        if name.startswith("EVERTRAIN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVERTRAIN_ACTOR", "tester")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def pg_schemas() -> Iterator[PostgresSchemas]:
    """Fresh PostgreSQL schemas for one test; they are dropped when it ends."""
    require_postgres()
    schemas = PostgresSchemas()
    try:
        yield schemas
    finally:
        schemas.drop_all()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty metadata databases on the test's backend."""
    if backend == "sqlite":
        counter = iter(range(1_000_000))

        def sqlite_url() -> str:
            return f"sqlite:///{tmp_path / f'meta-{next(counter)}.db'}"

        yield sqlite_url
        return
    schemas: PostgresSchemas = request.getfixturevalue("pg_schemas")
    yield schemas.new_url


@pytest.fixture
def db_url(new_db_url: Callable[[], str]) -> str:
    """The URL of an empty metadata database on the test's backend."""
    return new_db_url()


@pytest.fixture
def artifacts_url(tmp_path: Path) -> str:
    return str(tmp_path / "artifacts")


@pytest.fixture
def store(db_url: str, artifacts_url: str) -> Iterator[Store]:
    """An opened store on the test's backend, with its artifacts in the test's folder."""
    opened = Store(db_url, artifacts_url).open()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The fast demo, run through the real HTTP app into a fresh project folder."""
    from evertrain.faces.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "project"
    with io.StringIO() as sink:
        summary = run_demo(out, fast=True, console=Console(file=sink, width=120))
    return out, summary


class ManualTime:
    """A clock the test moves by hand (``clock.now = ...``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualTime:
    return ManualTime(1_767_225_600.0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def project_store(project: Path, clock: ManualTime) -> Iterator[Store]:
    """One SQLite store in a project folder, on the hand-moved clock."""
    opened = Store.for_project(project, clock=clock).open()
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 base model (2 layers, 64 wide) with a tokenizer trained on ticket text,
    pre-trained briefly; built offline once per test session (about ten seconds on one core)."""
    torch = pytest.importorskip("torch", reason="the llm extra (torch, transformers, peft) is not installed")
    pytest.importorskip("peft")
    torch.set_num_threads(1)
    from evertrain.data.tickets import pretraining_text
    from evertrain.train.tiny_base import build_tiny_base

    return build_tiny_base(
        tmp_path_factory.mktemp("tiny-base") / "base", pretraining_text(800), pretrain_steps=30
    )


@pytest.fixture(scope="session")
def tiny_causal_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 base to fine-tune as a generator: pre-trained longer than ``tiny_base`` and on
    the routing replies' words too (as any real base knows the words of its answers; which
    desk a ticket goes to is what fine-tuning teaches). About fifteen seconds on one core."""
    torch = pytest.importorskip("torch", reason="the llm extra (torch, transformers, peft) is not installed")
    pytest.importorskip("peft")
    torch.set_num_threads(1)
    from evertrain.data.tickets import make_ticket_replies, pretraining_text
    from evertrain.train.tiny_base import build_tiny_base

    replies = list(make_ticket_replies(400, seed=99)["response"])
    return build_tiny_base(
        tmp_path_factory.mktemp("tiny-causal-base") / "base",
        pretraining_text(800) + replies,
        pretrain_steps=150,
    )
