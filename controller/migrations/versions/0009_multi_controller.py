"""Several controllers on one database: a task event is recorded once whoever records it (a
unique index on task, attempt, seq and kind; duplicates recorded before are removed first),
and a `leases` table names the one controller that runs the sweeps
(docs/architecture.md#several-controllers).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM task_events WHERE id NOT IN ("
        "SELECT MIN(id) FROM task_events GROUP BY task_id, attempt, seq, event)"
    )
    op.create_index("uq_task_events_event", "task_events", ["task_id", "attempt", "seq", "event"], unique=True)
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("uq_task_events_event", table_name="task_events")
