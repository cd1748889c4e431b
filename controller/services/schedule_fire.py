"""Firing schedules, on the controller that holds the sweep lease, once per slot
(docs/architecture.md#schedules).

Each due schedule (enabled, `next_run_at <= now`) is moved on by a compare-and-set UPDATE
`SET next_run_at = :next WHERE id = :id AND next_run_at = :due`, in the transaction that
creates what it fires, so the slot's task exists exactly when the slot was taken: a second
controller (or a lease hand-over mid-pass) finds no row to update and creates nothing, and a
controller killed before its commit leaves the slot due for the next holder. The task or
broadcast is named `<schedule id>-<slot as YYYYMMDDTHHMMSSZ>`, so even a copy that got
through would be the same row.

Missed slots: when the controller comes back (or a schedule is found late) only the latest
slot at or before now fires, once, provided it is at most `missed_window` seconds old; the
slots before it, or all of them when it is older, are skipped: counted on the schedule
(`skipped`, `last_skip`) and logged. The next slot is the first one after now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.models import Schedule
from controller.services import broadcasts, jobs, task_create
from controller.services.errors import ServiceError
from controller.services.publisher import Publisher
from controller.services.schedules import COUNT_CAP, count_between, latest_at_or_before, next_after
from schemas.api import BroadcastCreate, TaskCreate
from schemas.common import utcnow
from schemas.jobs import JobCreate
from schemas.validation import describe_validation_error

log = logging.getLogger(__name__)

BATCH = 100  # schedules fired in one pass at most
ERROR_LENGTH = 400


def fire_id(schedule_id: str, slot: datetime) -> str:
    """The id of what a schedule creates for `slot`: the same whoever fires it."""
    return f"{schedule_id}-{slot:%Y%m%dT%H%M%SZ}"


def _create(session: Session, publisher: Publisher, action: dict[str, Any], made_id: str) -> Callable[[], None]:
    """Stage what `action` creates under `made_id`; returns the step that publishes it once
    committed. Raises ServiceError (or ValidationError) when it cannot be created."""
    kind, body = next(iter(action.items()))
    if kind == "task":
        task = task_create.stage_task(session, TaskCreate.model_validate(body), publisher, made_id)

        def publish() -> None:
            task_create.publish_task(task, publisher)

        return publish
    if kind == "broadcast":
        _broadcast, _ids, publish = broadcasts.stage_broadcast(session, BroadcastCreate.model_validate(body),
                                                               publisher, made_id)
        return publish
    if kind == "job":
        jobs.stage_job(session, JobCreate.model_validate(body), publisher, made_id)
        return lambda: None  # the rollout pass sends its runs
    raise ServiceError(f"unknown action kind {kind!r}")


def _skip_note(schedule: Schedule, due: datetime, latest: datetime, fires: bool, window: float) -> tuple[int, str | None]:
    """How many missed slots are skipped, and what to say about it."""
    missed = count_between(schedule.cron, schedule.timezone, due, latest) + (0 if fires else 1)
    many = f"{missed}{' or more' if missed >= COUNT_CAP else ''} missed slot(s) from {due.isoformat()}"
    if not missed:
        return 0, None
    if fires:
        return missed, f"{many} skipped; only the latest, {latest.isoformat()}, fired"
    return missed, (f"{many} to {latest.isoformat()} skipped: older than FLEET_SCHEDULE_MISSED_WINDOW "
                    f"({window:g} s)")


def fire_one(session: Session, publisher: Publisher, schedule_id: str, now: datetime, window: float) -> bool:
    """Fire the due slot of one schedule if this call wins it; True when it created something."""
    schedule = session.get(Schedule, schedule_id, populate_existing=True)
    if schedule is None or not schedule.enabled or schedule.next_run_at is None or schedule.next_run_at > now:
        session.rollback()
        return False
    due = schedule.next_run_at
    latest = latest_at_or_before(schedule.cron, schedule.timezone, now)
    fires = (now - latest).total_seconds() <= window
    skipped, note = _skip_note(schedule, due, latest, fires, window)
    values: dict[str, Any] = {"next_run_at": next_after(schedule.cron, schedule.timezone, now), "updated_at": now}
    if skipped:
        values.update(skipped=Schedule.skipped + skipped, last_skip=note[:ERROR_LENGTH] if note else None)
    won = session.execute(
        update(Schedule).where(Schedule.id == schedule_id, Schedule.next_run_at == due).values(**values)
        .returning(Schedule.id)
    ).first()
    if won is None:
        session.rollback()  # another controller took this slot
        return False
    if note:
        log.warning("schedule %s (%s): %s", schedule_id, schedule.name, note)
    if not fires:
        session.commit()
        return False
    made = fire_id(schedule_id, latest)
    publish, error = None, None
    try:
        with session.begin_nested():
            publish = _create(session, publisher, schedule.action, made)
    except ServiceError as exc:
        error = exc.detail
    except ValidationError as exc:
        error = "the stored action is no longer valid: " + describe_validation_error(exc)
    except IntegrityError:
        error = f"{made} exists already"
    session.execute(update(Schedule).where(Schedule.id == schedule_id).values(
        last_run_at=latest, last_fired_at=now, last_result=None if error else made,
        last_error=error[:ERROR_LENGTH] if error else None,
    ))
    session.commit()
    if publish is None:
        log.warning("schedule %s (%s) fired for %s but created nothing: %s", schedule_id, schedule.name, latest, error)
        return False
    publish()
    log.info("schedule %s (%s) fired for %s (%.2f s late): %s", schedule_id, schedule.name, latest.isoformat(),
             (now - latest).total_seconds(), made)
    return True


def next_slot(session: Session) -> datetime | None:
    """The earliest slot due of an enabled schedule."""
    value = session.scalar(select(func.min(Schedule.next_run_at)).where(Schedule.enabled.is_(True)))
    return value if isinstance(value, datetime) else None


def fire_due(session: Session, publisher: Publisher, *, missed_window: float, now: datetime | None = None) -> int:
    """Fire every schedule whose slot is due; returns how many created something."""
    now = now or utcnow()
    due = list(session.scalars(
        select(Schedule.id).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at).limit(BATCH)
    ))
    session.rollback()
    return sum(fire_one(session, publisher, schedule_id, now, missed_window) for schedule_id in due)
