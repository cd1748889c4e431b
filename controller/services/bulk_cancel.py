"""Cancel many tasks at once, by filter (`POST /api/v1/tasks/cancel`, `fleet task cancel --device
…`): per device, account, broadcast, type (the jobs add theirs), through the one cancel path
(`task_control.cancel_task`): a task not yet started ends `canceled` at once, a running one is
told to stop and reports `canceled` itself, a pending retry never runs."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from controller.models import Task
from controller.services import lifecycle
from controller.services.errors import ConflictError, NotFoundError
from controller.services.publisher import Publisher
from controller.services.task_control import cancel_task
from schemas.housekeeping import IDS_LISTED, TaskCancelFilter, TaskCancelOut

log = logging.getLogger(__name__)

# Filter field → the column it matches. A new filter (the jobs' `job_id`) is one entry here and
# one field of `TaskCancelFilter`.
FILTER_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "device_id": Task.device_id,
    "account": Task.account,
    "broadcast_id": Task.broadcast_id,
    "job_id": Task.job_id,
    "type": Task.type,
}
CHUNK = 500  # ids read per query


def _conditions(body: TaskCancelFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for name, value in body.filters().items():
        column = FILTER_COLUMNS.get(name)
        if column is None:  # a filter field with no column: a programming error, not bad input
            raise RuntimeError(f"TaskCancelFilter.{name} has no column in bulk_cancel.FILTER_COLUMNS")
        conditions.append(column == value)
    if body.status is not None:
        conditions.append(Task.status.in_(body.status))
    else:
        unfinished = [status.value for status in lifecycle.UNFINISHED_STATUSES]
        conditions.append(or_(Task.status.in_(unfinished), Task.retry_at.is_not(None)))
    return conditions


def matching_ids(session: Session, body: TaskCancelFilter) -> list[str]:
    """The ids of the tasks the filter names, oldest first."""
    query = select(Task.id).where(*_conditions(body)).order_by(Task.created_at, Task.id)
    return list(session.scalars(query))


def cancel_matching(session: Session, body: TaskCancelFilter, publisher: Publisher) -> TaskCancelOut:
    """Cancel every task the filter names (or, with `dry_run`, list them), one short
    transaction per task; one that ended meanwhile is skipped."""
    ids = matching_ids(session, body)
    session.rollback()  # end the read before the cancels' own transactions
    skipped = 0
    if not body.dry_run:
        for task_id in ids:
            try:
                cancel_task(session, task_id, publisher)
            except (ConflictError, NotFoundError):
                session.rollback()
                skipped += 1
        log.info("bulk cancel %s: %d task(s) canceled, %d had ended", body.filters(), len(ids) - skipped, skipped)
    return TaskCancelOut(count=len(ids) - skipped, dry_run=body.dry_run, task_ids=ids[:IDS_LISTED],
                         truncated=len(ids) > IDS_LISTED, skipped=skipped)
