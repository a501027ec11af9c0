"""A lease in the metadata database, so that two controllers on one store never both act.

The holder renews it while it works; another process may take it only once it expired.
Each grant to a new holder increments ``token``, the fencing token, and the lease is a
fence: :meth:`Lease.fence` makes every later write transaction of this process on the
store check, inside that transaction, that the lease still carries this holder and token,
and refuse it (:class:`~evertrain.exceptions.LeaseLostError`) otherwise. So a controller
paused past its lease (a long GC pause, SIGSTOP, a VM migration) that wakes up after
another took over cannot write a single row more; it stops.

Releasing keeps the row (expired at once) so tokens only ever grow: a holder that lost
the lease can never be granted its old token again.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.store._tx import run_write
from evertrain.store.metadata import Database, Fence, leases


class Lease:
    def __init__(self, db: Database, name: str, holder: str, ttl: float, clock: Callable[[], float]) -> None:
        self.db = db
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.token: int | None = None

    def acquire(self) -> bool:
        """Take or renew the lease; False if another holder has it and it has not expired."""

        def work(conn: Connection) -> int | None:
            now = self.clock()
            row = conn.execute(sa.select(leases).where(leases.c.name == self.name).with_for_update()).first()
            if row is None:
                conn.execute(
                    sa.insert(leases).values(
                        name=self.name, holder=self.holder, token=1, expires_at=now + self.ttl
                    )
                )
                return 1
            if row.holder != self.holder and row.expires_at > now:
                return None
            token = int(row.token) + (0 if row.holder == self.holder else 1)
            conn.execute(
                sa.update(leases)
                .where(leases.c.name == self.name, leases.c.token == row.token)
                .values(holder=self.holder, token=token, expires_at=now + self.ttl)
            )
            return token

        with self.db.unfenced():
            self.token = run_write(self.db, work)
        return self.token is not None

    def renew(self) -> bool:
        """Extend the lease this holder has, with its token; False (nothing changed) if it was lost."""
        token = self.token
        if token is None:
            return False

        def work(conn: Connection) -> bool:
            done = conn.execute(
                sa.update(leases)
                .where(leases.c.name == self.name, leases.c.holder == self.holder, leases.c.token == token)
                .values(expires_at=self.clock() + self.ttl)
            )
            return bool(done.rowcount)

        with self.db.unfenced():
            return run_write(self.db, work)

    def fence(self) -> None:
        """From now on, every write of this process on the store needs this lease and token."""
        if self.token is None:
            raise RuntimeError(f"lease {self.name!r}: not held, so there is nothing to fence with")
        self.db.fence = Fence(self.name, self.holder, self.token)

    def holder_now(self) -> tuple[str, float] | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == self.name)).first()
        return None if row is None else (row.holder, row.expires_at)

    def release(self) -> None:
        """Let the lease go at once (expired, token kept), if this holder still has it; drop the fence."""

        def work(conn: Connection) -> None:
            conn.execute(
                sa.update(leases)
                .where(leases.c.name == self.name, leases.c.holder == self.holder)
                .values(expires_at=0.0)
            )

        with self.db.unfenced():
            run_write(self.db, work)
        if self.db.fence == Fence(self.name, self.holder, self.token or 0):
            self.db.fence = None
        self.token = None
