"""Pieces of running several controllers on one database (docs/architecture.md#several-controllers):
the sweep lease, the generated client id, the link watch, upserts of racing rows, and
migration 0009's removal of duplicate timeline rows."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller import lease
from controller.db import create_db_engine, migrate
from controller.instance import CLIENT_ID_FILE, LinkWatch, controller_client_id
from controller.models import Device, Lease, TaskEventRecord
from controller.services import devices
from controller.services.upsert import insert_ignore
from schemas.common import utcnow
from schemas.status import DeviceStatus


def test_lease_is_held_by_one_and_passes_when_it_expires(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert lease.take(session, "sweeper", "a", 5)
        assert lease.take(session, "sweeper", "a", 5)  # renewed
        assert not lease.take(session, "sweeper", "b", 5)
        assert lease.holder_of(session, "sweeper") == "a"
        session.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
        assert lease.holder_of(session, "sweeper") is None
        assert lease.take(session, "sweeper", "b", 5)
        assert not lease.take(session, "sweeper", "a", 5)
        lease.release(session, "sweeper", "a")  # not a's: nothing happens
        assert lease.holder_of(session, "sweeper") == "b"
        lease.release(session, "sweeper", "b")
        assert lease.take(session, "sweeper", "a", 5)


def test_client_id_is_generated_once_and_an_explicit_one_wins(tmp_path: Path) -> None:
    settings = FleetSettings(data_dir=tmp_path)
    first = controller_client_id(settings)
    assert first.startswith("fleet-controller-") and len(first) <= 64
    assert (tmp_path / CLIENT_ID_FILE).read_text().strip() == first
    assert controller_client_id(FleetSettings(data_dir=tmp_path)) == first
    assert controller_client_id(FleetSettings(data_dir=tmp_path / "other")) != first
    assert controller_client_id(FleetSettings(data_dir=tmp_path, controller_client_id="mine")) == "mine"


def test_link_watch_names_the_clash_after_repeated_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    watch = LinkWatch(window=60, limit=3)
    watch.dropped()
    watch.dropped()
    assert watch.problem("c1") is None
    watch.dropped()
    problem = watch.problem("c1")
    assert problem is not None and "'c1'" in problem and "FLEET_CONTROLLER_CLIENT_ID" in problem
    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert watch.recent() == 0 and watch.problem("c1") is None


def test_a_device_inserted_meanwhile_is_found_not_inserted_again(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert insert_ignore(session, Device, {"id": "pc-1", "status": "offline", "created_at": utcnow()}) == 1
        session.commit()
        assert insert_ignore(session, Device, {"id": "pc-1", "status": "online", "created_at": utcnow()}) == 0
        birth = DeviceStatus(device_id="pc-1", state="online", session_id="s1", at=utcnow())
        cache = devices.PresenceCache(devices={"pc-1": None}, recent={"pc-1": []})  # read before the other insert
        assert devices.stage_status(session, "pc-1", birth, cache) is True
        session.commit()
        device = session.get(Device, "pc-1")
        assert device is not None and device.status == "online" and device.session_id == "s1"
        assert session.scalar(select(func.count()).select_from(Device)) == 1


def test_migration_0009_keeps_one_row_of_each_event(tmp_path: Path) -> None:
    engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0008")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO devices (id, status, groups, created_at) VALUES ('d', 'online', '[]', '2026-01-01')"))
        connection.execute(text(
            "INSERT INTO tasks (id, device_id, type, params, status, origin, created_at, updated_at, dispatch_count, "
            "attempt, max_retries, retry_backoff, resends) VALUES ('t', 'd', 'echo', '{}', 'succeeded', 'api', "
            "'2026-01-01', '2026-01-01', 1, 1, 0, 5, 0)"))
        for seq, event in [(0, "accepted"), (0, "accepted"), (1, "succeeded"), (1, "succeeded"), (1, "succeeded")]:
            connection.execute(text(
                "INSERT INTO task_events (task_id, event, attempt, seq, at, received_at, replay, applied) "
                "VALUES ('t', :event, 1, :seq, '2026-01-01', '2026-01-01', 0, 1)"), {"event": event, "seq": seq})
    migrate(engine)
    with Session(engine) as session:
        rows = session.execute(select(TaskEventRecord.seq, TaskEventRecord.event).order_by(TaskEventRecord.id)).all()
        assert [tuple(row) for row in rows] == [(0, "accepted"), (1, "succeeded")]
    engine.dispose()
