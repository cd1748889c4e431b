"""Alert webhooks (docs/architecture.md#alerts): the `alert_deliveries` outbox, one row per
(rule, subject, occurrence); indexes on `tasks.finished_at` (task_failed) and
`device_connections (device_id, id)` (a device's latest connection, for device_offline).

Revision ID: 0012
Revises: 0010 (the merger chains it after 0011)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("occurrence", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.String(length=400), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=400), nullable=True),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("uq_alert_deliveries_occurrence", "alert_deliveries", ["rule", "subject", "occurrence"], unique=True)
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["state", "next_attempt_at"], unique=False)
    op.create_index("ix_alert_deliveries_created_at", "alert_deliveries", ["created_at"], unique=False)
    op.create_index("ix_tasks_finished_at", "tasks", ["finished_at"], unique=False)
    op.create_index("ix_device_connections_device_latest", "device_connections", ["device_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_connections_device_latest", table_name="device_connections")
    op.drop_index("ix_tasks_finished_at", table_name="tasks")
    op.drop_index("ix_alert_deliveries_created_at", table_name="alert_deliveries")
    op.drop_index("ix_alert_deliveries_due", table_name="alert_deliveries")
    op.drop_index("uq_alert_deliveries_occurrence", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
