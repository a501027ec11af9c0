"""runs: an index on (model, status, created, ended) for the dashboard's and status's counts

The counts of a model's runs by status (failed, running), its newest creation and end
times, and a page of its failed runs read only this index, not every row of the
table with its parameters and results: on a store of 10,000 runs the table is
megabytes of JSON, the index a few hundred kilobytes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runs_model_status", ["model_id", "status", "created_at", "ended_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_model_status")
