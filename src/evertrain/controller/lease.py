"""A lease in the metadata database, so that two controllers on one store never both act.

The holder renews it every cycle; another process may take it only once it expired.
Each grant increments ``token`` (a fencing token) so a holder that lost the lease
while paused can tell.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.store._tx import run_write
from evertrain.store.metadata import Database, leases


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

        self.token = run_write(self.db, work)
        return self.token is not None

    def holder_now(self) -> tuple[str, float] | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == self.name)).first()
        return None if row is None else (row.holder, row.expires_at)

    def release(self) -> None:
        def work(conn: Connection) -> None:
            conn.execute(sa.delete(leases).where(leases.c.name == self.name, leases.c.holder == self.holder))

        run_write(self.db, work)
        self.token = None
