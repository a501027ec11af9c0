"""Compute budgets for training: a daily allowance of seconds and a cap on concurrent trainings.

Both live in the store, so every process sharing it (controllers, CLI calls, replicas)
sees the same budget:

- the **daily budget** is the sum of the measured training seconds of today's (UTC)
  training and sweep-trial runs of the model, against ``training.budget.daily_train_seconds``;
- the **concurrency cap** is ``training.budget.max_concurrent`` slots, each a row of the
  ``leases`` table (``train-slot:<i>``), shared by every model of the store.

Leases expire unless renewed, and a lease whose holder is a dead process on this very
machine is free at once: a training killed with SIGKILL neither keeps its slot nor
blocks the resumption of its own step until the lease times out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain._background import repeating
from evertrain.exceptions import BudgetExhausted
from evertrain.store import Store
from evertrain.store._tx import run_write
from evertrain.store.metadata import leases

#: A lease not renewed for this long is free: its holder is presumed gone (another host).
LEASE_TTL_SECONDS = 120.0
#: Holders renew well within the TTL, so two missed renewals still do not lose a lease.
RENEW_EVERY_SECONDS = LEASE_TTL_SECONDS / 4
SECONDS_PER_DAY = 86_400.0
#: Run kinds whose measured seconds count against the daily budget.
BUDGET_RUN_KINDS = ("train", "trial")
SLOT_PREFIX = "train-slot:"


def holder_id() -> str:
    """A lease holder for one training in this process: ``host:pid:nonce``.

    The nonce tells apart two trainings of one process; host and pid let anyone on this
    machine see that the holder has died.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    """Whether ``holder`` names a process on this machine that no longer exists."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Leases:
    """Named, expiring, renewable locks in the ``leases`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def acquire(self, name: str, holder: str, ttl: float = LEASE_TTL_SECONDS) -> bool:
        """Take ``name`` if it is free, expired, held by a dead local process, or already ours."""

        def work(conn: Connection) -> bool:
            now = self.store.clock()
            row = conn.execute(sa.select(leases).where(leases.c.name == name).with_for_update()).first()
            if row is None:
                conn.execute(
                    sa.insert(leases).values(name=name, holder=holder, token=1, expires_at=now + ttl)
                )
                return True
            if row.holder == holder or row.expires_at <= now or _dead_here(row.holder):
                conn.execute(
                    sa.update(leases)
                    .where(leases.c.name == name, leases.c.token == row.token)
                    .values(holder=holder, token=row.token + 1, expires_at=now + ttl)
                )
                return True
            return False

        return run_write(self.store.db, work)

    def renew(self, name: str, holder: str, ttl: float = LEASE_TTL_SECONDS) -> bool:
        def work(conn: Connection) -> bool:
            done = conn.execute(
                sa.update(leases)
                .where(leases.c.name == name, leases.c.holder == holder)
                .values(expires_at=self.store.clock() + ttl)
            )
            return bool(done.rowcount)

        return run_write(self.store.db, work)

    def release(self, name: str, holder: str) -> None:
        run_write(
            self.store.db,
            lambda conn: conn.execute(
                sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            ),
        )

    def holder(self, name: str) -> str | None:
        with self.store.db.read() as conn:
            row = conn.execute(
                sa.select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        if row is None or row.expires_at <= self.store.clock():
            return None
        return str(row.holder)


def heartbeat(lease_store: Leases, names: list[str], holder: str) -> contextlib.AbstractContextManager[None]:
    """Renew ``names`` in the background while the block runs (a long training keeps its leases)."""

    def beat() -> None:
        for name in names:
            with contextlib.suppress(Exception):  # a missed renewal is retried at the next beat
                lease_store.renew(name, holder)

    return repeating(RENEW_EVERY_SECONDS, beat, "evertrain-lease-heartbeat")


class TrainingBudget:
    """The daily allowance and the concurrency slots of one model's trainings."""

    def __init__(self, store: Store, model: str, budget: Any) -> None:
        self.store = store
        self.model = model
        self.budget = budget

    def spent_today(self) -> float:
        """Measured training seconds of the model's runs started today (UTC, by the store's clock)."""
        now = self.store.clock()
        day_start = now - now % SECONDS_PER_DAY
        spent = 0.0
        for kind in BUDGET_RUN_KINDS:
            for run in self.store.runs.list(model=self.model, kind=kind, created_since=day_start):
                spent += float(run.metrics.get("train_seconds") or 0.0)
        return spent

    def remaining(self) -> float:
        return max(0.0, float(self.budget.daily_train_seconds) - self.spent_today())

    def check(self) -> float:
        """Seconds left today; raises :class:`BudgetExhausted` when there are none."""
        left = self.remaining()
        if left <= 0:
            raise BudgetExhausted(
                f"model {self.model!r}: today's training budget (training.budget.daily_train_seconds = "
                f"{self.budget.daily_train_seconds:g}s) is spent ({self.spent_today():.1f}s used)"
            )
        return left

    @contextlib.contextmanager
    def slot(self, holder: str) -> Iterator[str]:
        """Hold one of the ``max_concurrent`` training slots for the block, or refuse at once."""
        lease_store = Leases(self.store)
        for index in range(self.budget.max_concurrent):
            name = f"{SLOT_PREFIX}{index}"
            if lease_store.acquire(name, holder):
                break
        else:
            raise BudgetExhausted(
                f"{self.budget.max_concurrent} training(s) already running (training.budget.max_concurrent = "
                f"{self.budget.max_concurrent}); try again when one ends"
            )
        try:
            with heartbeat(lease_store, [name], holder):
                yield name
        finally:
            lease_store.release(name, holder)
