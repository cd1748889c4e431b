"""Idempotent task creation and files any controller can serve
(docs/architecture.md#idempotent-task-creation, docs/architecture.md#the-file-store):
`idempotency_keys`, `tasks.request_sha256`, `file_chunks`, `files.store`, `shared_secrets`,
and `files.size` as a 64-bit integer (PostgreSQL's INTEGER stops at 2 GiB).

Revision ID: 0010
Revises: 0008 (the merger chains it after 0009)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("endpoint", "key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"], unique=False)
    op.create_table(
        "file_chunks",
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq"),
    )
    op.create_index("ix_file_chunks_created_at", "file_chunks", ["created_at"], unique=False)
    op.create_table(
        "shared_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("store", sa.String(length=16), nullable=False, server_default="local"))
        batch.alter_column("size", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.alter_column("size", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
        batch.drop_column("store")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("request_sha256")
    op.drop_table("shared_secrets")
    op.drop_index("ix_file_chunks_created_at", table_name="file_chunks")
    op.drop_table("file_chunks")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
