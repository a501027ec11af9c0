"""Alembic environment: runs on the connection that ``evertrain.store.migrations.upgrade`` passes in."""

from __future__ import annotations

from alembic import context

from evertrain.store.metadata import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic path is supported
    raise RuntimeError("run migrations through evertrain.store.migrations.upgrade")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()
