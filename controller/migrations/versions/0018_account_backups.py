"""Account session backups: per account, the sealed browser session a device sent (its stored
file, size, vault key fingerprint, when and from which device) (docs/architecture.md#the-session-vault).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import ID_LENGTH, UtcDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_backups",
        sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
        sa.Column("account", sa.String(200), sa.ForeignKey("accounts.name", ondelete="CASCADE"), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(16), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(ID_LENGTH), nullable=True),
        sa.Column("taken_at", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_account_backups_account", "account_backups", ["account"])


def downgrade() -> None:
    op.drop_index("ix_account_backups_account", table_name="account_backups")
    op.drop_table("account_backups")
