"""Schedules: a task or broadcast created at each time of a cron expression, read in an IANA
time zone (docs/architecture.md#schedules). This module keeps them (create, list, show,
pause, resume, delete) and reads cron expressions with croniter; `schedule_fire` fires them.

Cron times come from croniter (5 fields, or 6 with the seconds LAST; `@daily` and the like).
Daylight saving time is croniter's: a time inside the skipped hour fires at the first valid
time after it (02:30 on a spring-forward night fires at 03:00), and a time inside the repeated
hour fires twice, once in each offset (01:30 EDT and 01:30 EST are two slots).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.models import Schedule
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError
from schemas.common import new_id, utcnow
from schemas.schedules import ScheduleCreate, ScheduleList, ScheduleOut

log = logging.getLogger(__name__)

UPCOMING = 5  # fire times shown by GET /api/v1/schedules/{id}
EPSILON = timedelta(microseconds=1)


# ---- cron times --------------------------------------------------------------------------


def check_cron(expression: str, zone: str) -> None:
    """Refuse an expression croniter cannot read, or one that never fires again (422)."""
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in (5, 6):
        raise InvalidRequestError(
            f"cron expression {expression[:80]!r} has {len(fields)} fields; give 5 (minute hour day month weekday, "
            "e.g. '0 9 * * 1-5') or 6 with the seconds last (e.g. '* * * * * */10': every 10 s)"
        )
    try:
        croniter(expression, utcnow().astimezone(ZoneInfo(zone))).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidRequestError(f"cron expression {expression[:80]!r} never fires again") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
        raise InvalidRequestError(
            f"invalid cron expression {expression[:80]!r} ({str(exc)[:120]}); e.g. '0 9 * * 1-5' is 09:00 on weekdays"
        ) from None


def next_after(expression: str, zone: str, after: datetime) -> datetime | None:
    """The first fire time strictly after `after` (UTC), None when there is none."""
    try:
        value = croniter(expression, after.astimezone(ZoneInfo(zone))).get_next(datetime)
    except CroniterBadDateError:
        return None
    assert isinstance(value, datetime)
    return value.astimezone(timezone.utc)


def latest_at_or_before(expression: str, zone: str, moment: datetime) -> datetime:
    """The last fire time at or before `moment` (UTC)."""
    value = croniter(expression, (moment + EPSILON).astimezone(ZoneInfo(zone))).get_prev(datetime)
    assert isinstance(value, datetime)
    return value.astimezone(timezone.utc)


def fire_times(expression: str, zone: str, first: datetime, count: int) -> list[datetime]:
    """`first` and the fire times after it, `count` in all (fewer when the expression ends)."""
    times = [first]
    while len(times) < count:
        following = next_after(expression, zone, times[-1])
        if following is None:
            break
        times.append(following)
    return times


COUNT_CAP = 1000  # missed slots counted one by one at most (0.1 ms each); past it, "1000 or more"


def count_between(expression: str, zone: str, start: datetime, end: datetime, cap: int = COUNT_CAP) -> int:
    """Fire times in [start, end), counted up to `cap` (one iterator: about 0.1 ms a time)."""
    times = croniter(expression, (start - EPSILON).astimezone(ZoneInfo(zone)))
    count = 0
    while count < cap:
        try:
            moment = times.get_next(datetime)
        except CroniterBadDateError:
            break
        if moment >= end:
            break
        count += 1
    return count


# ---- CRUD --------------------------------------------------------------------------------


def out(schedule: Schedule, upcoming: bool = False) -> ScheduleOut:
    times: list[datetime] = []
    if upcoming and schedule.enabled and schedule.next_run_at is not None:
        times = fire_times(schedule.cron, schedule.timezone, schedule.next_run_at, UPCOMING)
    return ScheduleOut(
        id=schedule.id, name=schedule.name, cron=schedule.cron, timezone=schedule.timezone, action=schedule.action,
        enabled=schedule.enabled, next_run_at=schedule.next_run_at, last_run_at=schedule.last_run_at,
        last_fired_at=schedule.last_fired_at, last_result=schedule.last_result, last_error=schedule.last_error,
        skipped=schedule.skipped, last_skip=schedule.last_skip, created_at=schedule.created_at, upcoming=times,
    )


def create_schedule(session: Session, body: ScheduleCreate) -> Schedule:
    """Store a schedule; its first slot is the first fire time from now. Commits."""
    check_cron(body.cron, body.timezone)
    now = utcnow()
    schedule = Schedule(
        id="s" + new_id()[:15], name=body.name, cron=body.cron, timezone=body.timezone,
        action=body.model_dump(mode="json", exclude_defaults=True)["action"], enabled=body.enabled,
        next_run_at=next_after(body.cron, body.timezone, now) if body.enabled else None,
        skipped=0, created_at=now, updated_at=now,
    )
    session.add(schedule)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a schedule named {body.name!r} exists; choose another name or delete it first") from None
    log.info("schedule %s (%s) created: %r in %s, next at %s", schedule.id, schedule.name, schedule.cron,
             schedule.timezone, schedule.next_run_at)
    return schedule


def get_schedule(session: Session, key: str, lock: bool = False) -> Schedule:
    """A schedule by id, or by name."""
    query = select(Schedule).where(or_(Schedule.id == key, Schedule.name == key))
    found = session.scalars(query.with_for_update() if lock else query).first()
    if found is None:
        raise NotFoundError(f"schedule {key!r} does not exist; list them with GET /api/v1/schedules")
    return found


def list_schedules(session: Session) -> ScheduleList:
    return ScheduleList(items=[out(s) for s in session.scalars(select(Schedule).order_by(Schedule.name))])


def set_enabled(session: Session, key: str, enabled: bool) -> Schedule:
    """Pause (no slot is due; none fires while paused) or resume (the next slot from now: the
    times that passed while paused are not fired). Commits."""
    schedule = get_schedule(session, key, lock=True)
    if schedule.enabled != enabled:
        schedule.enabled = enabled
        schedule.next_run_at = next_after(schedule.cron, schedule.timezone, utcnow()) if enabled else None
        schedule.updated_at = utcnow()
    session.commit()
    log.info("schedule %s (%s) %s", schedule.id, schedule.name, "resumed" if enabled else "paused")
    return schedule


def delete_schedule(session: Session, key: str) -> None:
    """Delete a schedule; what it created stays. Commits."""
    schedule = get_schedule(session, key)
    session.execute(delete(Schedule).where(Schedule.id == schedule.id))
    session.commit()
    log.info("schedule %s (%s) deleted", schedule.id, schedule.name)
