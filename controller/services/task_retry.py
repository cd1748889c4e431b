"""Retrying a finished task: a new task with the same type, params, target and options."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller.models import Task
from controller.services import task_create
from controller.services.errors import ConflictError
from controller.services.publisher import Publisher
from controller.services.tasks import get_task
from schemas.api import TaskCreate
from schemas.events import FINAL_STATUSES


def retry_task(session: Session, task_id: str, publisher: Publisher) -> Task:
    """A new task like `task_id` (which must have finished: else a 409), created and published
    as `POST /api/v1/tasks` creates one. Its expiry is not copied: it would have passed."""
    old = get_task(session, task_id)
    if old.status not in FINAL_STATUSES or old.retry_at is not None:
        state = "waiting for its next attempt" if old.retry_at is not None else f"still {old.status}"
        raise ConflictError(f"task {task_id!r} is {state}; cancel it first or wait until it ends")
    body = TaskCreate(
        device_id=old.device_id, type=old.type, account=old.account, params=dict(old.params or {}),
        timeout=old.timeout, retries=old.max_retries, retry_backoff=old.retry_backoff,
    )
    session.rollback()  # end the read transaction before create_task's write
    return task_create.create_task(session, body, publisher)
