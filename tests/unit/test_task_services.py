"""Task creation, events, cancelling, re-dispatch and broadcasts in the controller's services on
a real SQLite database, with an in-memory stand-in for the MQTT publish side only.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.models import Task
from controller.services import broadcasts, devices, task_control, task_create, tasks
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError
from schemas.api import BroadcastCreate, TaskCreate
from schemas.common import utcnow
from schemas.events import EventKind, TaskSummary
from tests.services_kit import FakePublisher, event, go_online, status_of, will


def test_create_task_commits_then_publishes_and_is_dispatched(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        task = task_create.create_task(session, TaskCreate(device_id="pc-01", type="echo", params={"message": "hi"}, ttl=60), publisher)
    assert (task.status, task.dispatch_count, task.origin) == ("queued", 0, "api"), "dispatched only once the broker acks"
    assert publisher.ack(sessions) == [task.id]
    with sessions() as session:
        task = tasks.get_task(session, task.id)
    assert task.status == "dispatched" and task.dispatch_count == 1 and task.heard_at is not None
    [(topic, envelope)] = publisher.sent
    assert topic == "devices/pc-01/tasks"
    assert (envelope.id, envelope.type, envelope.params, envelope.broadcast_id) == (task.id, "echo", {"message": "hi"}, None)
    assert envelope.expires_at is not None and envelope.expires_at > utcnow()
    with sessions() as session:
        stored = session.get(Task, task.id)
        assert stored is not None and stored.created_at.tzinfo == timezone.utc and stored.dispatched_at is not None


def test_create_task_while_not_connected_stays_queued(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    publisher.accepting = False
    with sessions() as session:
        task = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher)
    assert (task.status, task.dispatch_count) == ("queued", 0)


def test_create_task_refuses_bad_requests(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01", task_types=["ping", "scrape"])
    with sessions() as session:
        with pytest.raises(NotFoundError, match="first connection"):
            task_create.create_task(session, TaskCreate(device_id="pc-99", type="ping"), publisher)
        with pytest.raises(InvalidRequestError, match=r"params\.title"):
            task_create.create_task(
                session,
                TaskCreate(device_id="pc-01", type="upload", params={"platform": "x", "video_url": "https://e.x/v.mp4"}),
                publisher,
            )
        with pytest.raises(InvalidRequestError, match="scrape"):
            task_create.create_task(session, TaskCreate(device_id="pc-01", type="dance"), publisher)
        custom = task_create.create_task(session, TaskCreate(device_id="pc-01", type="scrape", params={"any": 1}), publisher)
        assert custom.status == "queued" and publisher.unacked == [custom.id]
        with pytest.raises(InvalidRequestError, match="past"):
            task_create.create_task(
                session, TaskCreate(device_id="pc-01", type="ping", expires_at=utcnow() - timedelta(seconds=1)), publisher
            )


def test_adhoc_task_is_recorded_from_its_first_event(sessions: sessionmaker[Session]) -> None:
    summary = TaskSummary(type="chat", params={"platform": "x", "to": "bob", "message": "hi"}, source_topic="devices/pc-07/tasks")
    with sessions() as session:
        task = tasks.record_event(session, "pc-07", event("t-adhoc", "pc-07", EventKind.ACCEPTED, 0, task=summary))
        assert task is not None
    with sessions() as session:
        task = tasks.get_task(session, "t-adhoc")
        assert (task.origin, task.type, task.status, task.device_id) == ("adhoc", "chat", "accepted", "pc-07")
        assert devices.get_device(session, "pc-07").status == "online", "an unknown device is created from its event"
        broadcast_run = TaskSummary(type="ping", broadcast_id="b1")
        tasks.record_event(session, "pc-07", event("b1:pc-07", "pc-07", EventKind.SUCCEEDED, 1, task=broadcast_run))
    with sessions() as session:
        run = tasks.get_task(session, "b1:pc-07")
        assert (run.origin, run.broadcast_id, run.status) == ("broadcast", "b1", "succeeded")


def test_a_device_cannot_create_another_devices_run(sessions: sessionmaker[Session]) -> None:
    """Issue 12: pc-a may not claim `b1:pc-b` (pc-b's run of broadcast b1) ahead of pc-b."""
    go_online(sessions, "pc-a")
    go_online(sessions, "pc-b")
    squat = TaskSummary(type="ping", broadcast_id="b1")
    with sessions() as session:
        assert tasks.record_event(session, "pc-a", event("b1:pc-b", "pc-a", EventKind.ACCEPTED, 0, task=squat)) is None
        assert tasks.record_event(session, "pc-a", event("b1:pc-b", "pc-a", EventKind.ACCEPTED, 0)) is None
        mislabelled = TaskSummary(type="ping", broadcast_id="b2")
        assert tasks.record_event(session, "pc-a", event("b1:pc-a", "pc-a", EventKind.ACCEPTED, 0, task=mislabelled)) is None
        assert session.get(Task, "b1:pc-b") is None and session.get(Task, "b1:pc-a") is None
        run = tasks.record_event(session, "pc-b", event("b1:pc-b", "pc-b", EventKind.SUCCEEDED, 1, task=squat))
        assert run is not None and (run.device_id, run.status) == ("pc-b", "succeeded")


def test_events_for_another_devices_task_are_ignored(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    with sessions() as session:
        task_id = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
    publisher.ack(sessions)
    with sessions() as session:
        assert tasks.record_event(session, "pc-02", event(task_id, "pc-02", EventKind.SUCCEEDED, 0)) is None
        assert tasks.record_event(session, "pc-02", event(task_id, "pc-01", EventKind.SUCCEEDED, 0)) is None
    assert status_of(sessions, task_id) == "dispatched"


def test_cancel(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        queued = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        running = task_create.create_task(session, TaskCreate(device_id="pc-01", type="sleep"), publisher).id
        tasks.record_event(session, "pc-01", event(running, "pc-01", EventKind.STARTED, 0))
    publisher.clear()
    with sessions() as session:
        canceled = task_control.cancel_task(session, queued, publisher)
        assert canceled.status == "canceled" and canceled.finished_at is not None
    with sessions() as session:
        assert task_control.cancel_task(session, running, publisher).status == "running", "the device reports canceled itself"
    assert [(topic, env.type, env.params) for topic, env in publisher.sent] == [
        ("devices/pc-01/tasks", "cancel", {"task_id": queued, "attempt": 1}),
        ("devices/pc-01/tasks", "cancel", {"task_id": running, "attempt": 1}),
    ]
    with sessions() as session:
        assert [(e.event, e.message) for e in tasks.get_task(session, queued).events] == [
            ("canceled", "canceled by operator before it started")
        ]
        with pytest.raises(ConflictError, match="already canceled"):
            task_control.cancel_task(session, queued, publisher)
        with pytest.raises(NotFoundError):
            task_control.cancel_task(session, "nope", publisher)


def test_redispatch_unfinished_on_birth_in_order_with_expiry(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01", "s1")
    with sessions() as session:
        devices.apply_status(session, "pc-01", will("pc-01", "s1"))
        first = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        short = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", ttl=60), publisher).id
        second = task_create.create_task(session, TaskCreate(device_id="pc-01", type="echo"), publisher).id
        done = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        tasks.record_event(session, "pc-01", event(done, "pc-01", EventKind.SUCCEEDED, 0))
        publisher.ack(sessions)
        stored = session.get(Task, short)
        assert stored is not None
        stored.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    publisher.clear()
    assert go_online(sessions, "pc-01", "s2") is True
    with sessions() as session:
        sent = task_control.redispatch_unfinished(session, "pc-01", publisher)
    assert sent == [first, second]
    assert [(topic, env.id) for topic, env in publisher.sent] == [("devices/pc-01/tasks", first), ("devices/pc-01/tasks", second)]
    assert publisher.ack(sessions) == [first, second]
    with sessions() as session:
        assert session.get(Task, first).dispatch_count == 2  # type: ignore[union-attr]
        expired = tasks.get_task(session, short)
        assert expired.status == "expired" and [e.event for e in expired.events] == ["expired"]


def test_broadcast_fans_out_per_device_runs(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01", groups=["lab"])
    go_online(sessions, "pc-02")
    go_online(sessions, "pc-03", groups=["lab"])
    with sessions() as session:
        devices.apply_status(session, "pc-03", will("pc-03", "s1"))
        everyone, ids = broadcasts.create_broadcast(session, BroadcastCreate(type="ping"), publisher)
    assert ids == [f"{everyone.id}:pc-01", f"{everyone.id}:pc-02"]
    [(topic, envelope)] = publisher.sent
    assert (topic, envelope.id, envelope.broadcast_id) == ("fleet/broadcast/tasks", everyone.id, None)

    publisher.clear()
    with sessions() as session:
        lab, lab_ids = broadcasts.create_broadcast(
            session, BroadcastCreate(type="echo", group="lab", include_offline=True), publisher
        )
    publisher.ack(sessions)
    with sessions() as session:
        out = broadcasts.get_broadcast(session, lab.id)
    assert lab_ids == [f"{lab.id}:pc-01", f"{lab.id}:pc-03"]
    assert [topic for topic, _ in publisher.sent] == ["fleet/groups/lab/tasks"]
    assert out.status_counts == {"dispatched": 1, "queued": 1} and out.group == "lab"
    with sessions() as session:
        run = session.get(Task, f"{lab.id}:pc-01")
        assert run is not None and (run.origin, run.broadcast_id) == ("broadcast", lab.id)

    publisher.clear()
    go_online(sessions, "pc-03", "s2", groups=["lab"])
    with sessions() as session:
        task_control.redispatch_unfinished(session, "pc-03", publisher)
    [(topic, envelope)] = publisher.sent
    assert (topic, envelope.id, envelope.broadcast_id) == ("devices/pc-03/tasks", f"{lab.id}:pc-03", lab.id)
    with sessions() as session, pytest.raises(NotFoundError):
        broadcasts.get_broadcast(session, "nope")
