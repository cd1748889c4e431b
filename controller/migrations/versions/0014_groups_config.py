"""Groups managed on the controller and fleet config (docs/architecture.md#groups-and-fleet-config):
`devices.declared_groups` (what a birth declared; `devices.groups` becomes the membership the
controller sets), the device's desired/reported config columns, and the `fleet_config` levels.

Existing rows: a device's groups used to be what it declared. Its membership becomes the groups
its broker identity allows (what the broker really let it subscribe to); a device without an
identity (an anonymous broker) keeps its declared groups.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.models import UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("declared_groups", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("config_revision", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("config_desired", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("config_reported", sa.JSON(), nullable=True))
    op.create_table(
        "fleet_config",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "name"),
    )
    _split_groups()


def _split_groups() -> None:
    bind = op.get_bind()
    devices = sa.table("devices", sa.column("id", sa.String), sa.column("groups", sa.JSON),
                       sa.column("declared_groups", sa.JSON))
    identities = sa.table("mqtt_identities", sa.column("name", sa.String), sa.column("role", sa.String),
                          sa.column("groups", sa.JSON), sa.column("revoked_at", sa.DateTime))
    allowed = {name: groups for name, groups in bind.execute(
        sa.select(identities.c.name, identities.c.groups).where(identities.c.role == "device",
                                                                identities.c.revoked_at.is_(None)))}
    for device_id, groups in bind.execute(sa.select(devices.c.id, devices.c.groups)).all():
        declared = list(groups or [])
        members = declared if device_id not in allowed else [g for g in declared if g in (allowed[device_id] or [])]
        bind.execute(devices.update().where(devices.c.id == device_id).values(declared_groups=declared, groups=members))


def downgrade() -> None:
    op.drop_table("fleet_config")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("config_reported")
        batch.drop_column("config_desired")
        batch.drop_column("config_revision")
        batch.drop_column("declared_groups")
