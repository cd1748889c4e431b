"""Schedules and pacing (docs/architecture.md#schedules): `tasks.run_at` (a task not published
before then) with an index on (status, run_at); the `schedules` table (cron, time zone, action,
next slot); `pacing_rules` and `pacing_slots` (the minimum interval between an account's tasks
of a type, and the latest slot given).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("run_at", UtcDateTime(timezone=True), nullable=True))
    op.create_index("ix_tasks_due", "tasks", ["status", "run_at"], unique=False)
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("action", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_fired_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_result", sa.String(length=160), nullable=True),
        sa.Column("last_error", sa.String(length=400), nullable=True),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("last_skip", sa.String(length=400), nullable=True),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_schedules_due", "schedules", ["enabled", "next_run_at"], unique=False)
    op.create_table(
        "pacing_rules",
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("interval", sa.Float(), nullable=False),
        sa.Column("jitter", sa.Float(), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "task_type"),
    )
    op.create_table(
        "pacing_slots",
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("last_run_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_sent_at", UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("account", "task_type"),
    )


def downgrade() -> None:
    op.drop_table("pacing_slots")
    op.drop_table("pacing_rules")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
    op.drop_index("ix_tasks_due", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("run_at")
