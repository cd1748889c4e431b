"""Messages about tasks that already exist: an operator's cancel or input (a verification code)
for a task in flight, sent as control messages (`cancel`, `input`) on the device's task topic,
and the re-dispatch of a device's unfinished tasks when it is born again."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import Task
from controller.services import lifecycle
from controller.services.errors import ConflictError, NotFoundError, ServiceUnavailableError
from controller.services.publisher import Publisher
from controller.services.task_create import envelope_for
from controller.services.tasks import add_controller_event
from schemas.api import TaskInput
from schemas.common import new_id, utcnow
from schemas.events import EventKind, TaskStatus
from schemas.tasks import CANCEL_TYPE, INPUT_TYPE, CancelParams, InputParams, TaskEnvelope
from schemas.topics import device_tasks

log = logging.getLogger(__name__)


def send_cancel(task: Task, publisher: Publisher) -> None:
    """Tell the task's device to stop (or never start) the task's current attempt."""
    cancel = TaskEnvelope(
        id=new_id(), type=CANCEL_TYPE, params=CancelParams(task_id=task.id, attempt=task.attempt).model_dump(),
        created_at=utcnow(),
    )
    if not publisher.publish(device_tasks(task.device_id), cancel):
        log.warning("the cancel of task %s was not sent: the MQTT client is not connected", task.id)


def send_input(session: Session, task_id: str, body: TaskInput, publisher: Publisher) -> Task:
    """Pass a value (a verification code) to a running task on its device. The value goes out
    on the device's task topic only; it is neither stored nor logged."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFoundError(f"task {task_id!r} does not exist; list tasks with GET /api/v1/tasks")
    if task.status != TaskStatus.RUNNING.value:
        raise ConflictError(f"task {task_id!r} is {task.status}; input can only be sent to a running task")
    envelope = TaskEnvelope(
        id=new_id(), type=INPUT_TYPE, created_at=utcnow(),
        params=InputParams(task_id=task.id, name=body.name, value=body.value).model_dump(),
    )
    if not publisher.publish(device_tasks(task.device_id), envelope):
        raise ServiceUnavailableError("the controller is not connected to the MQTT broker; send the input again")
    log.info("input %r sent to task %s", body.name, task.id)
    return task


def cancel_task(session: Session, task_id: str, publisher: Publisher) -> Task:
    """Stop a task. One that has not started, or is waiting for a retry, is canceled at once; the
    device is told either way, so a copy already delivered never runs. A running task reports
    `canceled` itself."""
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        raise NotFoundError(f"task {task_id!r} does not exist; list tasks with GET /api/v1/tasks")
    status = TaskStatus(task.status)
    if status.is_final and task.retry_at is None:
        session.rollback()
        raise ConflictError(
            f"task {task_id!r} is already {status.value} and cannot be canceled; "
            "only queued, dispatched, accepted or running tasks, or tasks waiting for a retry, can"
        )
    if task.retry_at is not None:
        task.retry_at = None
        add_controller_event(session, task, EventKind.CANCELED, f"canceled by operator; attempt {task.attempt + 1} never ran")
    elif status in lifecycle.PENDING_STATUSES:
        add_controller_event(session, task, EventKind.CANCELED, "canceled by operator before it started")
    session.commit()
    if not status.is_final:
        send_cancel(task, publisher)
    log.info("cancel of task %s (%s) requested", task.id, status.value)
    session.refresh(task)
    return task


BIRTH_CHUNK = 500  # device ids per query when the births of an ingest batch are looked up


def redispatch_births(session: Session, device_ids: Sequence[str], publisher: Publisher) -> list[str]:
    """`redispatch_unfinished` for each device that has an unfinished task, found for all the
    born devices in one read per BIRTH_CHUNK (most have none: no write transaction for them)."""
    pending: set[str] = set()
    unfinished = [s.value for s in lifecycle.UNFINISHED_STATUSES]
    for start in range(0, len(device_ids), BIRTH_CHUNK):
        chunk = list(device_ids[start : start + BIRTH_CHUNK])
        pending.update(session.scalars(
            select(Task.device_id).where(Task.device_id.in_(chunk), Task.status.in_(unfinished)).distinct()
        ))
    session.rollback()  # end the read before each device's own transaction
    sent: list[str] = []
    for device_id in dict.fromkeys(device_ids):
        if device_id in pending:
            sent += redispatch_unfinished(session, device_id, publisher)
            session.commit()
    return sent


def redispatch_unfinished(session: Session, device_id: str, publisher: Publisher) -> list[str]:
    """On a device's birth, publish again (in creation order) every task of it that is not
    finished: queued and dispatched ones may never have arrived; for accepted and running ones
    the device answers with the recorded outcome if it finished while its results were lost
    (say, while the controller was down), and with its latest event if it still runs.

    Pending tasks whose expiry passed become `expired` instead; queued tasks whose `run_at` is
    still to come are left for the sweeper to release then. The rows stay locked while they
    are published, so a concurrent cancel is sent after the task it cancels. Returns the ids sent.
    """
    unfinished = session.scalars(
        select(Task)
        .where(Task.device_id == device_id, Task.status.in_([s.value for s in lifecycle.UNFINISHED_STATUSES]))
        .order_by(Task.created_at, Task.id)
        .with_for_update()
    ).all()
    now = utcnow()
    sent: list[str] = []
    expired = 0
    for task in unfinished:
        if task.run_at is not None and task.run_at > now and task.status == TaskStatus.QUEUED.value:
            continue  # not yet: sweeper.release_due publishes it when its run_at comes
        pending = TaskStatus(task.status) in lifecycle.PENDING_STATUSES
        if pending and task.expires_at is not None and task.expires_at <= now:
            expired += 1
            add_controller_event(session, task, EventKind.EXPIRED, "expired before its device came back online")
            continue
        if not publisher.publish(device_tasks(task.device_id), envelope_for(task), task_ids=(task.id,)):
            log.warning("re-dispatch to device %s stopped: the MQTT client is not connected", device_id)
            break
        sent.append(task.id)
    session.commit()  # the tasks become dispatched (again) as the broker acknowledges each message
    if unfinished:
        log.info("device %s: re-dispatched %d unfinished task(s), %d expired", device_id, len(sent), expired)
    return sent
