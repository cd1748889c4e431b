"""The controller's services on a real database (SQLite here, PostgreSQL in one test), with an
in-memory stand-in for the MQTT publish side only, and REST checks through `create_app`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.app import create_app
from controller.db import (
    create_db_engine,
    create_sessionmaker,
    migrate,
    migration_config,
)
from controller.models import Device, Task
from controller.services import broadcasts, devices, lifecycle, sweeper, task_control, task_create, tasks
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError
from schemas.api import BroadcastCreate, TaskCreate
from schemas.common import utcnow
from schemas.events import EventKind, TaskStatus, TaskSummary
from tests.services_kit import ADMIN_TOKEN, FakePublisher, birth, event, go_online, status_of, unused_port, will


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


# ---- presence ----------------------------------------------------------------------------


def test_birth_and_will_of_the_current_session(sessions: sessionmaker[Session]) -> None:
    assert go_online(sessions, "pc-01", "s1", groups=["lab"]) is True
    assert go_online(sessions, "pc-01", "s1") is False, "a repeated (retained) birth is not a new session"
    with sessions() as session:
        device = devices.get_device(session, "pc-01")
        assert (device.status, device.session_id, device.name) == ("online", "s1", "PC pc-01")
        assert device.online_since is not None and device.online_since.tzinfo is not None
        assert devices.apply_status(session, "pc-01", will("pc-01", "s1")) is False
    with sessions() as session:
        device = devices.get_device(session, "pc-01")
        assert device.status == "offline"
        history = devices.connections(session, "pc-01")
        assert [(c.state, c.session_id) for c in history] == [("offline", "s1"), ("online", "s1")]
        assert all(c.at.tzinfo == timezone.utc for c in history)


def test_stale_will_never_marks_a_live_device_offline(sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    go_online(sessions, "pc-01", "s1")
    assert go_online(sessions, "pc-01", "s2") is True, "a birth with a new session id is a new session"
    with sessions() as session, caplog.at_level("INFO"):
        devices.apply_status(session, "pc-01", will("pc-01", "s1"))
    assert "stale" in caplog.text
    with sessions() as session:
        device = devices.get_device(session, "pc-01")
        assert (device.status, device.session_id) == ("online", "s2")
        assert [c.state for c in devices.connections(session, "pc-01")] == ["online", "online"]


def test_status_naming_another_device_is_ignored(sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    with sessions() as session, caplog.at_level("WARNING"):
        assert devices.apply_status(session, "pc-01", birth("pc-02", "s1")) is False
    assert "names another device" in caplog.text
    with sessions() as session:
        assert session.scalars(select(Device)).all() == []


def test_list_devices_filters(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01", groups=["lab"])
    go_online(sessions, "pc-02", groups=["office"])
    go_online(sessions, "mac-03", groups=["lab"])
    with sessions() as session:
        devices.apply_status(session, "mac-03", will("mac-03", "s1"))
    with sessions() as session:
        assert [d.id for d in devices.list_devices(session, group="lab")[0]] == ["mac-03", "pc-01"]
        assert [d.id for d in devices.list_devices(session, status="online")[0]] == ["pc-01", "pc-02"]
        assert [d.id for d in devices.list_devices(session, q="PC ")[0]] == ["mac-03", "pc-01", "pc-02"]
        page, total = devices.list_devices(session, limit=1, offset=1)
        assert ([d.id for d in page], total) == (["pc-01"], 3)


# ---- tasks -------------------------------------------------------------------------------


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


def test_status_moves_forward_only_and_final_is_sticky(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        task_id = task_create.create_task(session, TaskCreate(device_id="pc-01", type="sleep"), publisher).id

    def report(kind: EventKind, seq: int, **fields: Any) -> None:
        with sessions() as session:
            tasks.record_event(session, "pc-01", event(task_id, "pc-01", kind, seq, **fields))

    report(EventKind.STARTED, 1)
    report(EventKind.ACCEPTED, 0)  # arrives late: appended, status stays running
    assert status_of(sessions, task_id) == "running"
    report(EventKind.PROGRESS, 2, progress=40, message="sleeping")
    report(EventKind.PROGRESS, 2, progress=40, message="sleeping")  # duplicate delivery
    report(EventKind.SUCCEEDED, 3, progress=100, result={"slept": 1})
    report(EventKind.FAILED, 4, error={"code": "late", "message": "too late"})
    with sessions() as session:
        task = tasks.get_task(session, task_id)
        assert (task.status, task.progress, task.result, task.error, task.last_seq) == (
            "succeeded", 100, {"slept": 1}, None, 4
        )
        assert task.finished_at is not None and task.finished_at.tzinfo == timezone.utc
        assert [(e.event, e.seq, e.applied) for e in task.events] == [
            ("started", 1, True), ("accepted", 0, False), ("progress", 2, True), ("succeeded", 3, True), ("failed", 4, False)
        ]


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("queued", "dispatched", True), ("queued", "succeeded", True), ("dispatched", "accepted", True),
        ("dispatched", "running", True), ("accepted", "running", True), ("running", "running", True),
        ("running", "failed", True), ("accepted", "dispatched", False), ("running", "accepted", False),
        ("dispatched", "queued", False), ("succeeded", "failed", False), ("succeeded", "queued", False),
        ("rejected", "queued", False), ("canceled", "running", False), ("failed", "queued", True),
        ("timed_out", "queued", True), ("expired", "queued", False),
    ],
)
def test_lifecycle_transitions(current: str, new: str, allowed: bool) -> None:
    assert lifecycle.can_move(TaskStatus(current), TaskStatus(new)) is allowed


def test_retry_policy() -> None:
    now = utcnow()
    failed, rejected = TaskStatus.FAILED, TaskStatus.REJECTED
    assert lifecycle.next_retry_at(rejected, 1, 5, 1.0, {"code": "invalid_params"}, now) is None  # never retried
    assert lifecycle.next_retry_at(failed, 1, 0, 1.0, {"code": "handler_error"}, now) is None
    assert lifecycle.next_retry_at(failed, 3, 2, 1.0, None, now) is None  # 2 retries used up
    assert lifecycle.next_retry_at(failed, 3, 3, 1.0, None, now) == now + timedelta(seconds=4)  # 1 s doubled twice
    assert lifecycle.next_retry_at(failed, 10, 20, 60.0, None, now) == now + timedelta(hours=1)  # capped
    interrupted_safe = {"code": "interrupted", "retryable": True}
    interrupted_unsafe = {"code": "interrupted", "retryable": False}
    assert lifecycle.next_retry_at(failed, 1, 0, 1.0, interrupted_safe, now) is not None  # one re-run even without retries
    assert lifecycle.next_retry_at(failed, 2, 0, 1.0, interrupted_safe, now) is None
    assert lifecycle.next_retry_at(failed, 1, 5, 1.0, interrupted_unsafe, now) is None  # a side effect may have happened


def test_retry_runs_as_a_new_attempt_and_old_attempts_cannot_move_it(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        task_id = task_create.create_task(
            session, TaskCreate(device_id="pc-01", type="sleep", retries=1, retry_backoff=0), publisher
        ).id
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.STARTED, 1))
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.FAILED, 2, error={"code": "x", "message": "m"}))
    publisher.clear()
    with sessions() as session:
        assert sweeper.sweep(session, publisher, timeout_grace=0).retried == 1
    [(topic, envelope)] = publisher.sent
    assert (topic, envelope.id, envelope.attempt) == ("devices/pc-01/tasks", task_id, 2)
    assert status_of(sessions, task_id) == "queued"
    publisher.ack(sessions)
    assert status_of(sessions, task_id) == "dispatched"
    with sessions() as session:
        # attempt 1's copy of a `succeeded` arrives late; a device claims to write controller events
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.SUCCEEDED, 3, result={}))
        assert tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.RETRYING, 4)) is None
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.STARTED, 1, attempt=2))
    with sessions() as session:
        task = tasks.get_task(session, task_id)
        assert (task.status, task.attempt, task.result) == ("running", 2, None)
        assert [(e.event, e.attempt, e.applied) for e in task.events] == [
            ("started", 1, True), ("failed", 1, True), ("retrying", 2, True), ("succeeded", 1, False), ("started", 2, True)
        ]


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


# ---- REST --------------------------------------------------------------------------------


def test_rest_errors_are_clear_4xx(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert (health["database"], health["mqtt_connected"], health["status"]) == (True, False, "degraded")
    assert "/api/v1/tasks/{task_id}/cancel" in client.get("/openapi.json").json()["paths"]

    missing = client.post("/api/v1/tasks", json={"device_id": "pc-01", "params": {"password": "s3cret"}})
    assert missing.status_code == 422
    assert ["body", "type"] in [err["loc"] for err in missing.json()["detail"]]
    assert "s3cret" not in missing.text

    unknown = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "ping"})
    assert unknown.status_code == 404 and "first connection" in unknown.json()["detail"]
    assert client.get("/api/v1/devices/pc-01").status_code == 404
    assert client.get("/api/v1/tasks/nope").json() == {"detail": "task 'nope' does not exist; list tasks with GET /api/v1/tasks"}
    assert client.get("/api/v1/tasks", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/devices", params={"limit": 0}).status_code == 422


def test_rest_task_lifecycle(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01", groups=["lab"])
    assert client.get("/api/v1/devices", params={"group": "lab"}).json()["total"] == 1
    assert client.get("/api/v1/devices/pc-01/connections").json()[0]["state"] == "online"

    bad = client.post(
        "/api/v1/tasks", json={"device_id": "pc-01", "type": "chat", "params": {"platform": "x", "to": "bob", "token": "s3cret"}}
    )
    assert bad.status_code == 422 and "params.message" in bad.json()["detail"] and "s3cret" not in bad.text

    created = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "echo", "params": {"message": "hi"}})
    assert created.status_code == 201
    task = created.json()
    assert task["status"] == "queued", "the broker is down: the task waits for the device's next birth"

    with sessions() as session:
        tasks.record_event(session, "pc-01", event(task["id"], "pc-01", EventKind.SUCCEEDED, 0, result={"message": "hi"}))
    detail = client.get(f"/api/v1/tasks/{task['id']}").json()
    assert detail["status"] == "succeeded" and [e["event"] for e in detail["events"]] == ["succeeded"]
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 409

    second = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "ping"}).json()
    canceled = client.post(f"/api/v1/tasks/{second['id']}/cancel")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    page = client.get("/api/v1/tasks", params={"device_id": "pc-01"}).json()
    assert [t["id"] for t in page["items"]] == [second["id"], task["id"]] and page["total"] == 2

    broadcast = client.post("/api/v1/broadcasts", json={"type": "ping", "group": "lab"})
    assert broadcast.status_code == 201
    body = broadcast.json()
    assert body["task_ids"] == [f"{body['id']}:pc-01"]
    assert client.get(f"/api/v1/broadcasts/{body['id']}").json()["status_counts"] == {"queued": 1}
    assert client.get("/api/v1/broadcasts/nope").status_code == 404


def test_presence_alerts_for_reconnect_storms_and_takeovers(sessions: sessionmaker[Session]) -> None:
    for n in range(devices.FLAP_BIRTHS):
        go_online(sessions, "pc-storm", f"bootaaaa-{n}")
        with sessions() as session:
            devices.apply_status(session, "pc-storm", will("pc-storm", f"bootaaaa-{n}"))
    with sessions() as session:
        alert = devices.get_device(session, "pc-storm").presence_alert
    assert alert is not None and alert.startswith("reconnect_storm: 5 connections")

    go_online(sessions, "pc-twin", "bootaaaa-1")
    go_online(sessions, "pc-twin", "bootbbbb-1")  # a new daemon while the first never went offline
    with sessions() as session:
        alert = devices.get_device(session, "pc-twin").presence_alert
    assert alert is not None and alert.startswith("takeover: daemon bootbbbb") and "bootaaaa" in alert
    with sessions() as session:
        devices.apply_status(session, "pc-twin", will("pc-twin", "bootbbbb-1"))
    go_online(sessions, "pc-twin", "bootbbbb-2")  # an ordinary reconnect clears it
    with sessions() as session:
        assert devices.get_device(session, "pc-twin").presence_alert is None


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


def test_accounts_route_tasks_and_follow_login_outcomes(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01", task_types=["login", "chat"])
    go_online(sessions, "pc-02")
    unbound = client.post("/api/v1/tasks", json={"account": "alice", "type": "ping"})
    assert unbound.status_code == 422 and "not bound to a device" in unbound.json()["detail"]
    assert client.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-09"}).status_code == 404
    created = client.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-01"})
    assert created.status_code == 201 and created.json()["login_status"] == "unknown"
    assert client.post("/api/v1/accounts", json={"name": "alice", "platform": "x", "device_id": "pc-01"}).status_code == 409

    login = client.post("/api/v1/tasks", json={"account": "alice", "type": "login", "params": {"platform": "reference"}})
    assert login.status_code == 201 and login.json()["device_id"] == "pc-01"  # routed by the account
    login_id = login.json()["id"]
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(login_id, "pc-01", EventKind.SUCCEEDED, 1,
                                                   result={"logged_in": True, "account_name": "Alice A."}))
    alice = client.get("/api/v1/accounts/alice").json()
    assert (alice["login_status"], alice["display_name"], alice["status_task_id"]) == ("logged_in", "Alice A.", login_id)
    assert alice["last_login_at"] is not None

    chat = client.post("/api/v1/tasks", json={
        "account": "alice", "type": "chat", "params": {"platform": "reference", "to": "bob", "message": "hi"},
    }).json()
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(chat["id"], "pc-01", EventKind.FAILED, 1,
                                                   error={"code": "not_logged_in", "message": "log in first"}))
    assert client.get("/api/v1/accounts/alice").json()["login_status"] == "expired"
    assert [a["name"] for a in client.get("/api/v1/accounts", params={"login_status": "expired"}).json()] == ["alice"]

    moved = client.patch("/api/v1/accounts/alice", json={"device_id": "pc-02"}).json()
    assert (moved["device_id"], moved["login_status"]) == ("pc-02", "unknown")
    assert client.delete("/api/v1/accounts/alice").status_code == 204
    assert client.get("/api/v1/accounts/alice").status_code == 404


def test_files_upload_hash_and_ranged_download(client: TestClient) -> None:
    import hashlib
    import os

    body = os.urandom(300_000)
    stored = client.post("/api/v1/files", params={"name": "clip.mp4"}, content=body,
                         headers={"content-type": "video/mp4"})
    assert stored.status_code == 201, stored.text
    info = stored.json()
    assert (info["size"], info["sha256"], info["name"]) == (len(body), hashlib.sha256(body).hexdigest(), "clip.mp4")
    assert f"/api/v1/files/{info['id']}/download?expires=" in info["url"]

    whole = client.get(f"/api/v1/files/{info['id']}")
    assert whole.status_code == 200 and whole.content == body
    device = TestClient(client.app)  # no API token: the signed link is the credential
    tail = device.get(info["url"], headers={"Range": "bytes=100000-"})
    assert tail.status_code == 206 and tail.content == body[100_000:]
    forged = device.get(info["url"][:-1] + ("0" if info["url"][-1] != "0" else "1"))
    assert forged.status_code == 403 and "signature" in forged.json()["detail"]
    assert device.get(f"/api/v1/files/{info['id']}").status_code == 401
    assert [f["id"] for f in client.get("/api/v1/files").json()] == [info["id"]]
    assert client.delete(f"/api/v1/files/{info['id']}").status_code == 204
    assert client.get(f"/api/v1/files/{info['id']}").status_code == 404


def test_rest_needs_a_token_with_enough_scope(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    assert anonymous.get("/healthz").status_code == 200  # the one open endpoint
    missing = anonymous.get("/api/v1/tasks")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "fleet token create" in missing.json()["detail"]
    assert anonymous.get("/api/v1/tasks", headers={"Authorization": "Bearer flt_nope_guess"}).status_code == 401

    made = client.post("/api/v1/tokens", json={"name": "viewer", "scope": "read"})
    assert made.status_code == 201
    viewer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert anonymous.get("/api/v1/devices", headers=viewer).status_code == 200
    denied = anonymous.post("/api/v1/broadcasts", headers=viewer, json={"type": "ping"})
    assert denied.status_code == 403 and "'operate'" in denied.json()["detail"]
    assert anonymous.get("/api/v1/tokens", headers=viewer).status_code == 403
    listed = client.get("/api/v1/tokens").json()
    assert {t["name"] for t in listed} == {"FLEET_ADMIN_TOKEN", "viewer"}
    assert all("token" not in t and "secret_sha256" not in t for t in listed)
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}").json()["revoked_at"] is not None
    assert client.delete("/api/v1/tokens/admin0").status_code == 409  # FLEET_ADMIN_TOKEN is retired by config
    assert anonymous.get("/api/v1/devices", headers=viewer).status_code == 401


def test_tasks_larger_than_devices_accept_are_refused_at_creation(client: TestClient) -> None:
    """A task whose message would exceed FLEET_MAX_PAYLOAD_BYTES (256 KiB) gets 413 saying why,
    and nothing is stored or sent: every device would reject it, and a broker with a packet
    limit would drop the controller for publishing it."""
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01", task_types=["scrape"])  # a custom type: its params are the device's business
    big = {"type": "scrape", "params": {"page": "x" * 300_000}}
    for path, body in (("/api/v1/tasks", {"device_id": "pc-01", **big}), ("/api/v1/broadcasts", big)):
        refused = client.post(path, json=body)
        assert refused.status_code == 413, refused.text
        assert "devices accept at most 262,144 bytes (FLEET_MAX_PAYLOAD_BYTES)" in refused.json()["detail"]
    assert client.get("/api/v1/tasks").json()["total"] == 0
    fits = {"device_id": "pc-01", "type": "scrape", "params": {"page": "x" * 200_000}}
    assert client.post("/api/v1/tasks", json=fits).status_code == 201


def test_oversized_bodies_and_floods_are_refused(client: TestClient) -> None:
    from controller.throttle import DeviceThrottle

    huge = client.post("/api/v1/tasks", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "at most" in huge.json()["detail"]

    now = [0.0]
    throttle = DeviceThrottle(rate=10, burst=3, clock=lambda: now[0])
    assert [throttle.allow("noisy") for _ in range(5)] == [True, True, True, False, False]
    assert throttle.allow("quiet")  # one device's flood does not touch another's budget
    now[0] += 0.2  # two messages' worth of refill
    assert [throttle.allow("noisy") for _ in range(3)] == [True, True, False]


def test_rest_signs_tasks_for_one_topic_with_an_admin_token(client: TestClient, tmp_path: Path) -> None:
    from schemas.signing import problem, trusted_keys
    from schemas.tasks import TaskEnvelope

    off = client.post("/api/v1/signatures", json={"task": {"type": "ping"}, "broadcast": True})
    assert off.status_code == 409 and "FLEET_TASK_SIGNING=true" in off.json()["detail"]
    settings = FleetSettings(
        data_dir=tmp_path / "signing", database_url=f"sqlite:///{tmp_path / 'signing' / 'controller.db'}",
        mqtt_url=f"mqtt://127.0.0.1:{unused_port()}", reconnect_max_delay=1, admin_token=ADMIN_TOKEN, task_signing=True,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as signing:
        key = signing.get("/api/v1/signatures/key").json()
        trusted = trusted_keys([key["public_key"]])
        made = signing.post("/api/v1/signatures", json={"task": {"id": "t1", "type": "ping"}, "device_id": "pc-01"})
        assert made.status_code == 201
        envelope = TaskEnvelope.model_validate(made.json())
        assert envelope.key_id == key["key_id"] and problem(envelope, trusted, "devices/pc-01/tasks") is None
        assert problem(envelope, trusted, "devices/pc-02/tasks") is not None
        group = signing.post("/api/v1/signatures", json={"task": {"type": "ping"}, "group": "lab"}).json()
        assert group["target"] == "fleet/groups/lab/tasks"
        both = signing.post("/api/v1/signatures", json={"task": {"type": "ping"}, "device_id": "pc-01", "broadcast": True})
        assert both.status_code == 422
        viewer = signing.post("/api/v1/tokens", json={"name": "op", "scope": "operate"}).json()["token"]
        denied = TestClient(signing.app).post("/api/v1/signatures", headers={"Authorization": f"Bearer {viewer}"},
                                             json={"task": {"type": "ping"}, "broadcast": True})
        assert denied.status_code == 403
    assert (tmp_path / "signing" / "task-signing-key.pem").stat().st_mode & 0o077 == 0
