"""Tasks remember when the controller last heard of them and when to send them again:
`heard_at`, `resends`, `resend_at` (docs/architecture.md#promise-8-the-promises-hold-at-fleet-size).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("heard_at", UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resends", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("resend_at", UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("resend_at")
        batch.drop_column("resends")
        batch.drop_column("heard_at")
