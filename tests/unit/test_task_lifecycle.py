"""A task's lifecycle in the controller's services: allowed status moves, final states that stay
final, the retry policy, and a retry running as a new attempt that old attempts cannot move.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.services import lifecycle, sweeper, task_create, tasks
from schemas.api import TaskCreate
from schemas.common import utcnow
from schemas.events import EventKind, TaskStatus
from tests.services_kit import FakePublisher, event, go_online, status_of


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
