"""The controller's services on a real PostgreSQL server: a fresh database per test, migrated
from empty, then the presence, task and broadcast paths the SQLite tests cover."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import DeviceConnection, TaskEventRecord
from controller.services import broadcasts, devices, event_batch, sweeper, task_control, task_create, tasks
from schemas.api import BroadcastCreate, TaskCreate
from schemas.common import utcnow
from schemas.events import EventKind
from tests.services_kit import FakePublisher, event, go_online, will
from tests.unit import test_event_batch as event_batch_kit

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


def test_services_on_postgresql(postgres_url: str, publisher: FakePublisher) -> None:
    engine = create_db_engine(postgres_url)
    try:
        migrate(engine)
        sessions = create_sessionmaker(engine)
        go_online(sessions, "pc-01", "s1")
        with sessions() as session:
            devices.apply_status(session, "pc-01", will("pc-01", "s1"))
            task_id = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", ttl=60), publisher).id
        assert go_online(sessions, "pc-01", "s2") is True
        with sessions() as session:
            devices.apply_status(session, "pc-01", will("pc-01", "s1"))  # stale
            assert task_control.redispatch_unfinished(session, "pc-01", publisher) == [task_id]
            tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.SUCCEEDED, 1))
            tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.ACCEPTED, 0))
        assert publisher.ack(sessions) == [task_id, task_id]  # acks recorded after the result move nothing back
        with sessions() as session:
            task = tasks.get_task(session, task_id)
            assert (task.status, task.dispatch_count) == ("succeeded", 2)
            assert task.created_at.tzinfo == timezone.utc
            assert [e.event for e in task.events] == ["succeeded", "accepted"]
            assert devices.get_device(session, "pc-01").status == "online"
            bid = broadcasts.create_broadcast(session, BroadcastCreate(type="ping"), publisher)[0].id
            assert broadcasts.get_broadcast(session, bid).task_ids == [f"{bid}:pc-01"]
            assert session.scalars(select(DeviceConnection.state)).all() == ["online", "offline", "online"]
            assert len(session.scalars(select(TaskEventRecord)).all()) == 2
            # the re-send sweep's SKIP LOCKED query (FOR UPDATE OF tasks) on PostgreSQL
            later = utcnow() + timedelta(seconds=31)
            assert sweeper.resend_unheard(session, publisher, later, 30.0) == 1
            assert sweeper.resend_unheard(session, publisher, later, 30.0) == 0, "backoff: not again at once"
    finally:
        engine.dispose()


def test_event_batch_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """The batched event path (FOR UPDATE, executemany of JSON, booleans and
    timestamps) on PostgreSQL records what `stage_event` records on SQLite."""
    engine = create_db_engine(postgres_url)
    migrate(engine)
    batched, one_by_one = create_sessionmaker(engine), event_batch_kit.database(tmp_path / "one.db")
    for sessions in (batched, one_by_one):
        event_batch_kit.seed(sessions)
    with one_by_one() as session:
        for device_id, task_event in event_batch_kit.events():
            tasks.stage_event(session, device_id, task_event)
        session.commit()
    start = utcnow()
    with batched() as session:
        event_batch.stage_events(session, event_batch_kit.events())
        session.commit()
    assert event_batch_kit.snapshot(batched) == event_batch_kit.snapshot(one_by_one)
    assert event_batch_kit.stamped_between(batched, start, utcnow()), "timestamps keep their zone"
    assert any(row[7] == "null" for row in event_batch_kit.stored(batched)), "JSON null, as the ORM writes it"
    engine.dispose()
