"""Retrying write transactions that lost a race to a unique constraint or a deadlock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evertrain.exceptions import StoreError
from evertrain.store.metadata import Database

T = TypeVar("T")

_RETRYABLE_PGCODES = {"40001", "40P01", "23505"}  # serialization failure, deadlock, unique violation


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _RETRYABLE_PGCODES:
        return True
    return "database is locked" in str(exc.orig)


def run_write(db: Database, work: Callable[[Connection], T], attempts: int = 8) -> T:
    """Run ``work`` in a write transaction, retrying it whole when it lost a race.

    Inside an enclosing write transaction it runs once, as part of it: a retry must then
    redo the whole enclosing unit, which is the caller's to do.
    """
    outer = db.current_write
    if outer is not None:
        return work(outer)
    for attempt in range(attempts):
        try:
            with db.write() as conn:
                return work(conn)
        except sa.exc.DBAPIError as exc:
            if attempt == attempts - 1 or not _retryable(exc):
                raise StoreError(f"metadata store write failed: {exc.orig}") from exc
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover
