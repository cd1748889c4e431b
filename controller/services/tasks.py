"""The task lifecycle after creation (`task_create`): the broker's acks make tasks dispatched,
device events move their status, and the controller's own events (cancel, expiry, timeout) go
on their timelines; plus the task queries. Cancel, input and the re-dispatch on a device's
birth are in `task_control`; which status changes are legal, and when a task is retried, is
`lifecycle`'s business.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.orm import Session, selectinload

from controller.models import Device, DeviceConnection, Task, TaskEventRecord
from controller.services import accounts, lifecycle
from controller.services.adhoc import foreign_task_id
from controller.services.devices import insert_device
from controller.services.errors import NotFoundError
from controller.services.task_rows import task_values
from controller.services.upsert import insert_ignore
from controller.warn_once import warn_once
from schemas.common import utcnow
from schemas.events import DEVICE_EVENTS, STATUS_OF_EVENT, EventKind, TaskEvent, TaskStatus

log = logging.getLogger(__name__)

_UPDATE_CHUNK = 500

# Statements of the ingest path built once: building a SQLAlchemy expression per event costs
# more CPU than running it. `_DEVICE_SEEN` runs on the connection (no ORM autoflush or session sync).
_DUPLICATE_EVENT = (
    select(TaskEventRecord.id)
    .where(
        TaskEventRecord.task_id == bindparam("task_id"),
        TaskEventRecord.attempt == bindparam("attempt"),
        TaskEventRecord.seq == bindparam("seq"),
        TaskEventRecord.event == bindparam("event"),
    )
    .limit(1)
)
_DEVICE_SEEN = update(Device).where(Device.id == bindparam("device_id")).values(last_seen=bindparam("now"))
_ACKED = (  # `stage_acked`; an expression built per ack cost the writer more than its SQL
    update(Task)
    .where(Task.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=case((Task.status == TaskStatus.QUEUED.value, TaskStatus.DISPATCHED.value), else_=Task.status),
        dispatched_at=bindparam("now"),
        dispatch_count=Task.dispatch_count + bindparam("count"),
        heard_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .execution_options(synchronize_session=False)
)


# ---- acks --------------------------------------------------------------------------------


def stage_acked(session: Session, task_ids: Sequence[str]) -> None:
    """Record that the broker acknowledged a message carrying these tasks: queued ones become
    dispatched, every count goes up by one, and the controller has heard of them now.

    A single UPDATE per chunk, so a device event recorded meanwhile (say `accepted`) is never
    moved back. Writes in the caller's transaction without committing it (the ingest writer).
    """
    now = utcnow()
    by_count: dict[int, list[str]] = {}  # a task acked twice in one batch (two publishes) counts twice
    for task_id, count in Counter(task_ids).items():
        by_count.setdefault(count, []).append(task_id)
    for count, ids in by_count.items():
        for start in range(0, len(ids), _UPDATE_CHUNK):
            _stage_acked_chunk(session, ids[start : start + _UPDATE_CHUNK], count, now)


def _stage_acked_chunk(session: Session, chunk: Sequence[str], count: int, now: datetime) -> None:
    session.flush()  # the statement runs on the connection: pending ORM changes go first, as with session.execute
    session.connection().execute(_ACKED, {"ids": list(chunk), "count": count, "now": now})


def mark_dispatched(session: Session, task_ids: Sequence[str]) -> None:
    """`stage_acked`, committed."""
    stage_acked(session, task_ids)
    session.commit()


# ---- events from devices -----------------------------------------------------------------


def _adhoc_task(session: Session, device_id: str, event: TaskEvent) -> Task:
    """A task the controller never created (hand-written `mosquitto_pub`, broadcast run): its
    device and its row inserted unless another controller, hearing of it too, did first."""
    now = utcnow()
    _device, created = insert_device(session, device_id, {"status": "online", "session_id": event.session_id,
                                                          "online_since": now, "created_at": now})
    if created:
        session.add(
            DeviceConnection(
                device_id=device_id, state="online", session_id=event.session_id, at=now, reason="first seen in a task event"
            )
        )
    summary = event.task
    values = task_values(
        id=event.task_id,
        device_id=device_id,
        type=summary.type if summary else "unknown",
        account=summary.account if summary else None,
        params=summary.params if summary else {},
        origin="broadcast" if summary and summary.broadcast_id else "adhoc",
        broadcast_id=summary.broadcast_id if summary else None,
        created_at=summary.created_at if summary else None,
        expires_at=summary.expires_at if summary else None,
        attempt=event.attempt,
    )
    inserted = insert_ignore(session, Task, values) == 1
    task = session.get(Task, event.task_id, with_for_update=True, populate_existing=True)
    assert task is not None
    if inserted:
        log.info("recorded %s task %s (%s) reported by device %s", task.origin, task.id, task.type, device_id)
    return task


def record_event(session: Session, topic_device_id: str, event: TaskEvent) -> Task | None:
    """`stage_event` in a transaction of its own, committed (or rolled back when ignored)."""
    task = stage_event(session, topic_device_id, event)
    if task is None:
        session.rollback()
    else:
        session.commit()
    return task


def stage_event(session: Session, topic_device_id: str, event: TaskEvent) -> Task | None:
    """Append a device's event to its task's timeline and move the task's status if the
    lifecycle allows it (events of an older attempt, late or out-of-order events are kept
    with `applied = false`). A final failure with retries left schedules the next attempt.

    Writes in the caller's transaction without committing it (the ingest writer records many
    events in one). Returns the task, or None when the event was ignored (it names another
    device or task, or is a kind only the controller writes); nothing was written then.
    """
    if event.device_id != topic_device_id:
        warn_once(
            session,
            "event-device",
            topic_device_id,
            "ignored task events on devices/%s/results that name another device (%s)",
            topic_device_id,
            event.device_id,
        )
        return None
    if event.event not in DEVICE_EVENTS:
        warn_once(session, "event-kind", topic_device_id, "ignored %r events from device %s: only the controller writes them",
                  event.event.value, topic_device_id)
        return None
    task = session.get(Task, event.task_id, with_for_update=True)
    if task is None and (why := foreign_task_id(session, topic_device_id, event)) is not None:
        warn_once(session, "event-foreign-id", topic_device_id,
                  "ignored events from device %s about task %s, an id it may not create: %s", topic_device_id, event.task_id, why)
        return None
    if task is None:
        task = _adhoc_task(session, topic_device_id, event)
    elif task.device_id != topic_device_id:
        warn_once(
            session,
            "event-task",
            topic_device_id,
            "ignored events from device %s about task %s, which belongs to device %s",
            topic_device_id,
            task.id,
            task.device_id,
        )
        return None

    duplicate = session.execute(
        _DUPLICATE_EVENT, {"task_id": task.id, "attempt": event.attempt, "seq": event.seq, "event": event.event.value}
    ).scalar()
    if duplicate is not None:
        if event.attempt == task.attempt:
            task.heard_at = utcnow()  # an answer to a re-send; no news, so the re-send backoff goes on
        return task

    now = utcnow()
    error = event.error.model_dump(mode="json", exclude_none=True) if event.error else None
    current, new = TaskStatus(task.status), STATUS_OF_EVENT[event.event]
    applied = event.attempt == task.attempt and lifecycle.can_move(current, new)
    session.add(
        TaskEventRecord(
            task_id=task.id,
            event=event.event.value,
            attempt=event.attempt,
            seq=event.seq,
            at=event.at,
            received_at=now,
            progress=event.progress,
            message=event.message,
            result=event.result,
            error=error,
            details=event.details,
            replay=event.replay,
            applied=applied,
        )
    )
    if applied:
        _apply(task, event, new, error, now)
        if new.is_final:
            accounts.apply_outcome(session, task)
    else:
        log.debug("task %s: %s event of attempt %d not applied (status %s, attempt %d)",
                  task.id, event.event.value, event.attempt, current.value, task.attempt)
    if event.attempt == task.attempt:
        task.last_seq = event.seq if task.last_seq is None else max(task.last_seq, event.seq)
        task.heard_at, task.resends, task.resend_at = now, 0, None
    task.updated_at = now
    session.connection().execute(_DEVICE_SEEN, {"device_id": topic_device_id, "now": now})
    return task


def _apply(task: Task, event: TaskEvent, new: TaskStatus, error: dict[str, Any] | None, now: datetime) -> None:
    task.status = new.value
    if event.event == EventKind.STARTED and task.started_at is None:
        task.started_at = now
    if event.progress is not None:
        task.progress = event.progress
    if event.message is not None:
        task.message = event.message
    if event.result is not None:
        task.result = event.result
    if error is not None:
        task.error = error
    if event.details is not None or new.is_final:
        task.details = event.details  # a QR code to scan is stale once the task ends
    if new.is_final:
        task.finished_at = now
        task.retry_at = lifecycle.next_retry_at(new, task.attempt, task.max_retries, task.retry_backoff, error, now)
        if task.retry_at is not None:
            log.info("task %s %s (attempt %d); attempt %d at %s", task.id, new.value, task.attempt, task.attempt + 1,
                     task.retry_at.isoformat(timespec="seconds"))


def add_controller_event(session: Session, task: Task, event: EventKind, message: str) -> None:
    """Add an event the controller itself decided (canceled, expired, timed_out, retrying) to the
    task's timeline, numbered after the current attempt's last event, and move the status."""
    now = utcnow()
    seq = 0 if task.last_seq is None else task.last_seq + 1
    status = STATUS_OF_EVENT[event]
    task.status = status.value
    task.message = message
    task.updated_at = now
    task.last_seq = seq
    if status.is_final:
        task.finished_at = now
    session.add(
        TaskEventRecord(task_id=task.id, event=event.value, attempt=task.attempt, seq=seq, at=now, received_at=now,
                        message=message)
    )


# ---- queries -----------------------------------------------------------------------------


def get_task(session: Session, task_id: str) -> Task:
    """A task with its events in the order they were received."""
    task = session.get(Task, task_id, options=[selectinload(Task.events)])
    if task is None:
        raise NotFoundError(f"task {task_id!r} does not exist; list tasks with GET /api/v1/tasks")
    return task


def list_tasks(
    session: Session,
    *,
    device_id: str | None = None,
    status: TaskStatus | None = None,
    type: str | None = None,
    broadcast_id: str | None = None,
    account: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Task], int]:
    """A page of tasks, newest first, and the total number that match (`created_after` and
    `created_before` bound `created_at`: at or after, before)."""
    query = select(Task)
    if account is not None:
        query = query.where(Task.account == account)
    if created_after is not None:
        query = query.where(Task.created_at >= created_after)
    if created_before is not None:
        query = query.where(Task.created_at < created_before)
    if device_id is not None:
        query = query.where(Task.device_id == device_id)
    if status is not None:
        query = query.where(Task.status == status.value)
    if type is not None:
        query = query.where(Task.type == type)
    if broadcast_id is not None:
        query = query.where(Task.broadcast_id == broadcast_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit).offset(offset))
    return list(page), total
