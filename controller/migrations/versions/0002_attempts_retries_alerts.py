"""Task attempts and retries, timeline events marked applied or not, structured status
details, device presence alerts and heartbeats.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.add_column(sa.Column("presence_alert", sa.String(length=400), nullable=True))
        table.add_column(sa.Column("heartbeat_interval", sa.Integer(), nullable=True))
        table.add_column(sa.Column("silent_after", UtcDateTime(timezone=True), nullable=True))
        table.create_index("ix_devices_silent_after", ["silent_after"], unique=False)
    with op.batch_alter_table("tasks") as table:
        table.add_column(sa.Column("started_at", UtcDateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        table.add_column(sa.Column("max_retries", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("retry_backoff", sa.Float(), nullable=False, server_default="5"))
        table.add_column(sa.Column("retry_at", UtcDateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("details", sa.JSON(), nullable=True))
        table.create_index("ix_tasks_retry_at", ["retry_at"], unique=False)
    with op.batch_alter_table("task_events") as table:
        table.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        table.add_column(sa.Column("applied", sa.Boolean(), nullable=False, server_default=sa.true()))
        table.add_column(sa.Column("details", sa.JSON(), nullable=True))
    with op.batch_alter_table("broadcasts") as table:
        table.add_column(sa.Column("max_retries", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("retry_backoff", sa.Float(), nullable=False, server_default="5"))


def downgrade() -> None:
    with op.batch_alter_table("broadcasts") as table:
        table.drop_column("retry_backoff")
        table.drop_column("max_retries")
    with op.batch_alter_table("task_events") as table:
        table.drop_column("details")
        table.drop_column("applied")
        table.drop_column("attempt")
    with op.batch_alter_table("tasks") as table:
        table.drop_index("ix_tasks_retry_at")
        for column in ("details", "retry_at", "retry_backoff", "max_retries", "attempt", "started_at"):
            table.drop_column(column)
    with op.batch_alter_table("devices") as table:
        table.drop_index("ix_devices_silent_after")
        for column in ("silent_after", "heartbeat_interval", "presence_alert"):
            table.drop_column(column)
