"""Jobs (docs/architecture.md#jobs): the `jobs` table (a task definition over a target, its
rollout, abort rules and where the rollout stands), `job_targets` (each device, or device and
account, a job addresses and whether its run was created) and the indexed `tasks.job_id` that
names a run's job.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("rollout", sa.JSON(), nullable=True),
        sa.Column("abort_rules", sa.JSON(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("abort_reason", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("run_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("started_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("ttl", sa.Float(), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retry_backoff", sa.Float(), nullable=False),
        sa.Column("next_run_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("runs_created", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"], unique=False)
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"], unique=False)
    op.create_table(
        "job_targets",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=160), nullable=False),
        sa.Column("added_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("run_created_at", UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "device_id", "account"),
    )
    op.create_index("ix_job_targets_pending", "job_targets", ["job_id", "run_created_at"], unique=False)
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("job_id", sa.String(length=32), nullable=True))
        batch.create_index("ix_tasks_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_job_id")
        batch.drop_column("job_id")
    op.drop_index("ix_job_targets_pending", table_name="job_targets")
    op.drop_table("job_targets")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
