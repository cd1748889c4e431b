"""Ingest at fleet scale: the births of one batch are followed up together (one read finds the
devices with unfinished tasks, only those are re-dispatched, in creation order as one birth
would), and heartbeats that arrive alone are held and written together, in order with statuses."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select
from sqlalchemy import event as sql_event
from sqlalchemy.orm import Session, sessionmaker

from controller.ingest import Incoming, IngestWriter
from controller.models import Device
from controller.services import task_control, task_create, tasks
from schemas.api import TaskCreate
from schemas.common import utcnow
from schemas.events import EventKind
from schemas.status import Heartbeat
from tests.services_kit import FakePublisher, birth, event, go_online, will


def test_births_of_a_batch_redispatch_only_devices_with_unfinished_tasks(sessions: sessionmaker[Session]) -> None:
    publisher = FakePublisher()
    born = [f"pc-{n:02d}" for n in range(6)]
    for device_id in born:
        go_online(sessions, device_id, "s1")
    with sessions() as session:
        first = task_create.create_task(session, TaskCreate(device_id="pc-03", type="ping"), publisher).id
        second = task_create.create_task(session, TaskCreate(device_id="pc-03", type="echo"), publisher).id
        done = task_create.create_task(session, TaskCreate(device_id="pc-05", type="ping"), publisher).id
        tasks.record_event(session, "pc-05", event(done, "pc-05", EventKind.SUCCEEDED, 0))
    publisher.clear()
    with sessions() as session:
        sent = task_control.redispatch_births(session, [*born, "pc-03"], publisher)  # a repeated id counts once
    assert sent == [first, second]
    assert [(topic, envelope.id) for topic, envelope in publisher.sent] == [
        ("devices/pc-03/tasks", first), ("devices/pc-03/tasks", second)]
    with sessions() as session:
        assert task_control.redispatch_births(session, [], publisher) == []


def _beat(device_id: str, session_id: str = "s1") -> Incoming:
    return Incoming(device_id, Heartbeat(device_id=device_id, session_id=session_id, at=utcnow()))


def _heartbeat_of(sessions: sessionmaker[Session], device_id: str) -> object:
    with sessions() as session:
        return session.scalar(select(Device.last_heartbeat).where(Device.id == device_id))


def test_heartbeats_alone_are_held_and_written_together(engine: Engine, sessions: sessionmaker[Session]) -> None:
    ids = [f"pc-{n:02d}" for n in range(50)]
    for device_id in ids:
        go_online(sessions, device_id, "s1")
    commits = [0]
    sql_event.listen(engine, "commit", lambda _c: commits.__setitem__(0, commits[0] + 1))
    writer = IngestWriter(sessions, lambda _ids: None, heartbeat_flush=0.5)
    writer.start()
    started = time.monotonic()
    for device_id in ids:  # one at a time, as an idle fleet's heartbeats arrive
        writer.put(_beat(device_id))
        time.sleep(0.002)
    while _heartbeat_of(sessions, ids[-1]) is None:
        assert time.monotonic() - started < 10, "held heartbeats were never written"
        time.sleep(0.02)
    assert all(_heartbeat_of(sessions, device_id) is not None for device_id in ids)
    assert commits[0] <= 2, f"{commits[0]} transactions for 50 heartbeats arriving one by one"
    writer.put(_beat("pc-00"))
    writer.stop()  # a held heartbeat is written on stop
    assert writer.stats().messages == 51


def test_a_held_heartbeat_is_written_before_a_later_status_of_its_device(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01", "s1")
    writer = IngestWriter(sessions, lambda _ids: None, heartbeat_flush=60)
    writer.start()
    writer.put(_beat("pc-01"))  # held beside the queue, not queued
    writer.put(Incoming("pc-01", will("pc-01", "s1")))
    writer.stop()
    with sessions() as session:
        device = session.get(Device, "pc-01")
        assert device is not None and device.last_heartbeat is not None
        assert device.status == "offline", "the heartbeat that came first never revives the device after its will"


def test_births_of_one_batch_are_judged_like_births_one_by_one(sessions: sessionmaker[Session]) -> None:
    """The batch reads its devices and recent births once; flapping, takeovers and stale wills
    come out as they do when each birth is recorded alone."""
    writer = IngestWriter(sessions, lambda _ids: None)
    flapping = [Incoming("pc-01", birth("pc-01", session_id)) for session_id in ("a-1", "b-1", "a-2", "b-2", "a-3")]
    writer.write([*flapping, Incoming("pc-02", birth("pc-02", "c-1")), Incoming("pc-02", will("pc-02", "old-9")),
                  Incoming("pc-03", birth("pc-03", "d-1"))])
    writer.write([Incoming("pc-03", birth("pc-03", "e-1"))])  # another daemon, while d-1 never went offline
    with sessions() as session:
        devices_by_id = {device.id: device for device in session.scalars(select(Device))}
    assert (devices_by_id["pc-01"].presence_alert or "").startswith("duplicate_id: 2 daemons")
    assert devices_by_id["pc-01"].session_id == "a-3"
    assert devices_by_id["pc-02"].status == "online" and devices_by_id["pc-02"].presence_alert is None
    assert (devices_by_id["pc-03"].presence_alert or "").startswith("takeover")


def test_heartbeats_are_recorded_while_a_backlog_waits_in_the_queue(sessions: sessionmaker[Session]) -> None:
    """Heartbeats skip the queue: a device whose heartbeat came after thousands of queued
    messages is seen alive with the first batch the writer records, not after the backlog
    (presence never starves). Driven batch by batch, so the machine's load cannot decide it."""
    go_online(sessions, "pc-01", "s1")
    go_online(sessions, "pc-02", "s1")
    writer = IngestWriter(sessions, lambda _ids: None, max_batch=50, heartbeat_flush=0.0)
    for _ in range(3000):  # repeated births of a current session: a backlog of real writes
        writer.put(Incoming("pc-01", birth("pc-01", "s1")))
    writer.put(_beat("pc-02"))
    batch, running = writer._take()
    assert running and len(batch) == 50
    writer.write(batch)
    assert _heartbeat_of(sessions, "pc-02") is not None, "the heartbeat waited behind the backlog"
    assert writer.stats().queue > 2900
    writer.start()
    writer.stop()
    assert writer.stats().queue == 0 and writer.stats().messages == 3001
