"""Statistics in SQL (docs/architecture.md#statistics-and-metrics): `tasks.platform` (the
`platform` parameter of login, upload and chat tasks, filled in for the tasks already there)
and a covering index over what `GET /api/v1/stats` groups and filters by, led by `created_at`,
so a time window reads a slice of the index and never the wide task rows (params, results).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

STATS_COLUMNS = ["created_at", "status", "type", "device_id", "platform", "account", "started_at", "finished_at"]


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("platform", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE tasks SET platform = substr(params->>'platform', 1, 64) "
                   "WHERE json_typeof(params->'platform') = 'string'")
    else:
        op.execute("UPDATE tasks SET platform = substr(json_extract(params, '$.platform'), 1, 64) "
                   "WHERE json_valid(params) AND json_type(params, '$.platform') = 'text'")
    op.create_index("ix_tasks_platform", "tasks", ["platform"], unique=False)
    op.create_index("ix_tasks_stats", "tasks", STATS_COLUMNS, unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_stats", table_name="tasks")
    op.drop_index("ix_tasks_platform", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("platform")
