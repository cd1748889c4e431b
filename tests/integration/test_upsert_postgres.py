"""`insert_ignore` on a real PostgreSQL server: the count it returns decides whether a device
was first seen now (and so gets its first connection row), so it must be exact there too;
psycopg's rowcount is -1 for these statements, which once made every device look known."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import Device
from controller.services.devices import insert_device
from controller.services.upsert import insert_ignore
from schemas.common import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    yield create_sessionmaker(engine)
    engine.dispose()


def test_insert_ignore_counts_what_it_inserted(pg_sessions: sessionmaker[Session]) -> None:
    row = {"id": "pc-1", "status": "offline", "created_at": utcnow()}
    with pg_sessions() as session:
        assert insert_ignore(session, Device, row) == 1
        assert insert_ignore(session, Device, row) == 0
        more = [row, {**row, "id": "pc-2"}, {**row, "id": "pc-3"}]
        assert insert_ignore(session, Device, more) == 2
        assert insert_ignore(session, Device, []) == 0


def test_a_device_first_seen_is_reported_created_once(pg_sessions: sessionmaker[Session]) -> None:
    with pg_sessions() as session:
        device, created = insert_device(session, "pc-9", {"status": "offline", "created_at": utcnow()})
        assert created and device.id == "pc-9"
        session.commit()
        _device, created_again = insert_device(session, "pc-9", {"status": "online", "created_at": utcnow()})
        assert not created_again
