"""Retrying write transactions that lost a race to a unique constraint or a deadlock."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.exceptions import StoreError
from evertrain.store.metadata import Database
from evertrain.store.retry import Retry

T = TypeVar("T")

_RETRYABLE_PGCODES = {"40001", "40P01", "23505"}  # serialization failure, deadlock, unique violation
#: Writers that collided retry after a short random wait (so that they do not collide
#: again), growing from 10 ms to at most half a second; eight tries in all.
WRITE_RETRY_ATTEMPTS = 8
WRITE_RETRY_BASE_DELAY = 0.01
WRITE_RETRY_MAX_DELAY = 0.5


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _RETRYABLE_PGCODES:
        return True
    return "database is locked" in str(exc.orig)


def run_write(db: Database, work: Callable[[Connection], T], attempts: int = WRITE_RETRY_ATTEMPTS) -> T:
    """Run ``work`` in a write transaction, retrying it whole when it lost a race.

    Inside an enclosing write transaction it runs once, as part of it: a retry must then
    redo the whole enclosing unit, which is the caller's to do.
    """
    outer = db.current_write
    if outer is not None:
        return work(outer)

    def once() -> T:
        with db.write() as conn:
            return work(conn)

    policy = Retry(
        attempts=attempts,
        base_delay=WRITE_RETRY_BASE_DELAY,
        max_delay=WRITE_RETRY_MAX_DELAY,
        retry_on=_retryable,
    )
    try:
        return policy.call(once)
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"metadata store write failed: {exc.orig}") from exc
