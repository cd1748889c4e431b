"""The controller's database itself: datetimes read back as aware UTC, and a release-0.1.0
database upgraded by the migrations with its rows kept.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from controller.db import (
    create_db_engine,
    create_sessionmaker,
    migrate,
    migration_config,
)
from controller.models import Device
from controller.services import tasks
from tests.services_kit import go_online


def test_datetimes_read_back_as_aware_utc(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        device = session.get(Device, "pc-01")
        assert device is not None
        device.last_seen = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        session.commit()
    with sessions() as session:
        device = session.get(Device, "pc-01")
        assert device is not None and device.last_seen == datetime(2030, 1, 1, 10, 0, tzinfo=timezone.utc)
        assert device.last_seen.tzinfo == timezone.utc


def test_a_0_1_0_database_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import text

    from controller.models import Base

    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0001")
    with engine.begin() as connection:  # what release 0.1.0's create_all left: tables, no alembic version
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text(
            "INSERT INTO devices (id, status, groups, created_at) VALUES ('pc-old', 'offline', '[]', '2026-01-01 00:00:00')"
        ))
        connection.execute(text(
            "INSERT INTO tasks (id, device_id, type, params, status, origin, created_at, updated_at, dispatch_count)"
            " VALUES ('t-old', 'pc-old', 'ping', '{}', 'queued', 'api', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0)"
        ))
    migrate(engine)
    migrate(engine)  # a second start changes nothing

    with create_sessionmaker(engine)() as session:
        task = tasks.get_task(session, "t-old")
        assert (task.status, task.attempt, task.max_retries, task.retry_at) == ("queued", 1, 0, None)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        command.check(migration_config(connection))
    engine.dispose()
