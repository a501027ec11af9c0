"""Shared helpers of the serving and rollout tests: a store, models with training schemas, a live server.

Everything is real: a SQLite store in a temporary folder, skops artifacts, a uvicorn
server on a loopback port in a thread (or a subprocess where signals matter).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import uvicorn

from evertrain.store import Store
from evertrain.store.formats import get_format
from evertrain.store.metadata import model_versions, models, snapshots, version_snapshots

FEATURES = ("x0", "x1", "x2", "x3")
SCHEMA: dict[str, Any] = {
    "columns": {
        "x0": {"type": "numeric", "nullable": False, "min": -4.0, "max": 4.0},
        "x1": {"type": "numeric", "nullable": False, "min": -4.0, "max": 4.0},
        "x2": {"type": "numeric", "nullable": True, "min": -4.0, "max": 4.0},
        "x3": {"type": "numeric", "nullable": False, "min": -4.0, "max": 4.0},
        "label": {"type": "categorical", "nullable": False, "categories": [0, 1]},
    }
}
START = 1_800_000_000.0  # a fixed epoch for fake clocks (2027-01-15)


class FakeClock:
    """A clock that moves only when told (or by ``step`` each time it is read)."""

    def __init__(self, start: float = START, step: float = 0.0) -> None:
        self.now = start
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            value = self.now
            self.now += self.step
            return value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_store(folder: Path, clock: Callable[[], float] = time.time) -> Store:
    folder.mkdir(parents=True, exist_ok=True)
    return Store(
        f"sqlite:///{folder / 'evertrain.db'}",
        str(folder / "artifacts"),
        logs_url=str(folder / "logs"),
        clock=clock,
    ).open()


def put_snapshot(store: Store, schema: dict[str, Any], n_rows: int = 1000) -> str:
    """Record a training snapshot with ``schema`` as the data part would."""
    sid = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
    with store.db.write() as conn:
        if conn.execute(sa.select(snapshots.c.id).where(snapshots.c.id == sid)).first() is None:
            conn.execute(
                sa.insert(snapshots).values(
                    id=sid, n_rows=n_rows, schema=schema, size_bytes=0, created_at=store.clock()
                )
            )
    return sid


def register(
    store: Store,
    name: str,
    estimator: Any,
    *,
    schema: dict[str, Any] | None = SCHEMA,
    framework: str = "sklearn",
) -> int:
    """Register ``estimator`` as a new version of ``name`` (with a training snapshot when ``schema``)."""
    digest = store.artifacts.put(get_format(framework).dumps(estimator))
    mv = store.registry.register(name, digest, framework=framework, actor="test")
    if schema is not None:
        # Linked in the table directly, as the data part's snapshot step will do.
        sid = put_snapshot(store, schema)
        with store.db.write() as conn:
            version_id = conn.execute(
                sa.select(model_versions.c.id)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(models.c.name == name, model_versions.c.version == mv.version)
            ).scalar_one()
            conn.execute(
                sa.insert(version_snapshots).values(version_id=version_id, snapshot_id=sid, role="train")
            )
    return mv.version


def training_frame(seed: int, n: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
    y = ((X["x0"] + X["x1"]) > 0).astype(int).to_numpy()
    return X, y


def true_label(row: dict[str, float]) -> int:
    return int(row["x0"] + row["x1"] > 0)


def classifier(seed: int = 0, *, inverted: bool = False) -> Any:
    """A logistic regression on x0..x3; ``inverted`` learns the opposite labels (a bad model)."""
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame(seed)
    return LogisticRegression().fit(X, 1 - y if inverted else y)


def constant(value: float) -> Any:
    """A regressor that always answers ``value``: a response shows which version made it."""
    from sklearn.dummy import DummyRegressor

    X, _ = training_frame(0, 20)
    return DummyRegressor(strategy="constant", constant=value).fit(X, np.zeros(len(X)))


def instances(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in values]


def free_socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when proto says TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """A real uvicorn server on a loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", ws="none", timeout_graceful_shutdown=10, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "uvicorn did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def client(url: str, **kw: Any) -> Any:
    """An HTTP client that sends small requests at once (no Nagle wait for the server's delayed ACK)."""
    import httpx

    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(socket_options=NODELAY), **kw)


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, message: str = "condition not met"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.01)


def read_log(store: Store, kind: str, model: str) -> pd.DataFrame:
    """Every row of one log of one model, read back from its Parquet partitions, oldest first."""
    from evertrain.data import logs

    table = logs.read_log(store.logs_url or "", kind, model)
    return table.to_pandas() if table.num_rows else pd.DataFrame()
