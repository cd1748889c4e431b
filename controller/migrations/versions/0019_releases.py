"""Remote update: `releases`, signed wheels of the device daemon kept in the file store
(docs/architecture.md#remote-update).

Revision ID: 0019
Revises: 0018 (the merger chains it after 0018)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"]),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index("ix_releases_created_at", "releases", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_releases_created_at", table_name="releases")
    op.drop_table("releases")
