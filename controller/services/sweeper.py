"""Time-driven task changes, run every second or so by the controller.

- expiry: a queued or dispatched task whose `expires_at` passed becomes `expired` (the device
  also refuses to start it, so a copy still on its way never runs);
- timeout: a running task with a `timeout` whose device has said nothing final by
  `started_at + timeout + grace` becomes `timed_out` and the device is told to stop it (its
  own timeout normally fires first; this catches a device that died or went silent);
- retries: a failed or timed-out task whose `retry_at` is due is queued again as its next
  attempt and published;
- silence: an online device not heard for two heartbeat intervals is taken for offline;
- re-send: an unfinished task of an online device that the controller has not heard of for
  `resend_after` seconds (no PUBACK of its message, no event of its device) is published to
  its device again, which answers from its journal (the outcome, or where the task stands) or
  runs it; each unanswered re-send doubles the wait, up to an hour. Nothing depends on the
  broker delivering every message (docs/architecture.md#promise-8-the-promises-hold-at-fleet-size);
- unacked: a queued task of an online device whose message no broker acknowledged within
  `unacked_grace` seconds (its controller had no broker link, or died before the PUBACK) is
  published, soon rather than after `resend_after` (docs/architecture.md#several-controllers);
- release: a queued task whose `run_at` came (REST `run_at`, pacing, a delayed broadcast's
  runs) is published to its online device for the first time (docs/architecture.md#schedules);
  until then no re-send or unacked publish touches it.

Everything is read from SQL, so a restarted controller carries on where the last one stopped;
rows are locked with SKIP LOCKED on PostgreSQL. Of several controllers on one database only the
holder of the sweep lease runs these (`controller.scheduler`), so each timer fires once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from controller.models import Device, PacingRule, Task
from controller.services import lifecycle, pacing
from controller.services.devices import mark_silent
from controller.services.publisher import Publisher
from controller.services.task_control import send_cancel
from controller.services.task_create import publish_task
from controller.services.tasks import add_controller_event
from schemas.common import utcnow
from schemas.events import EventKind, TaskStatus

log = logging.getLogger(__name__)

BATCH = 500
MAX_RESEND_DELAY = 3600.0  # seconds: the longest wait between two re-sends of one task
UNKNOWN_TYPE = "unknown"  # a task known only from events without a summary: no envelope to send


@dataclass(frozen=True)
class SweepResult:
    expired: int
    timed_out: int
    retried: int
    silent: int
    resent: int = 0
    unacked: int = 0
    released: int = 0


def _values(statuses: Iterable[TaskStatus]) -> list[str]:
    return [status.value for status in statuses]


def _deadline(task: Task, grace: float) -> datetime:
    assert task.started_at is not None and task.timeout is not None
    return task.started_at + timedelta(seconds=task.timeout + grace)


def expire_overdue(session: Session, now: datetime) -> int:
    overdue = session.scalars(
        select(Task)
        .where(Task.status.in_(_values(lifecycle.PENDING_STATUSES)), Task.expires_at <= now)
        .order_by(Task.expires_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for task in overdue:
        assert task.expires_at is not None
        add_controller_event(session, task, EventKind.EXPIRED,
                             f"not started before it expired at {task.expires_at.isoformat(timespec='seconds')}")
        log.info("task %s (%s) expired before it started", task.id, task.type)
    session.commit()
    return len(overdue)


def time_out_silent(session: Session, publisher: Publisher, now: datetime, grace: float) -> int:
    running = session.scalars(
        select(Task)
        .where(Task.status == TaskStatus.RUNNING.value, Task.timeout.is_not(None), Task.started_at.is_not(None))
        .order_by(Task.started_at)
        .with_for_update(skip_locked=True)
    ).all()
    late = [task for task in running if _deadline(task, grace) <= now][:BATCH]
    for task in late:
        add_controller_event(
            session, task, EventKind.TIMED_OUT,
            f"no result from device {task.device_id} within the timeout of {task.timeout:g} s (+{grace:g} s grace)",
        )
        task.retry_at = lifecycle.next_retry_at(
            TaskStatus.TIMED_OUT, task.attempt, task.max_retries, task.retry_backoff, None, now
        )
        log.warning("task %s (%s) timed out: device %s sent no result", task.id, task.type, task.device_id)
    session.commit()
    for task in late:
        send_cancel(task, publisher)
    return len(late)


def start_due_retries(session: Session, publisher: Publisher, now: datetime) -> int:
    due = session.scalars(
        select(Task)
        .where(Task.retry_at <= now, Task.status.in_(_values(lifecycle.RETRYABLE_STATUSES)))
        .order_by(Task.retry_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for task in due:
        ended, error = task.status, task.error
        attempts = 1 + lifecycle.retry_limit(task.max_retries, error)
        cause = f"{ended}: {error['code']}" if error and error.get("code") else ended
        task.attempt += 1
        task.retry_at = task.started_at = task.finished_at = None
        task.progress = task.result = task.error = task.last_seq = None
        task.heard_at, task.resends, task.resend_at = now, 0, None
        add_controller_event(session, task, EventKind.RETRYING, f"attempt {task.attempt} of {attempts} (after {cause})")
        log.info("task %s (%s): attempt %d of %d queued", task.id, task.type, task.attempt, attempts)
    session.commit()
    for task in due:
        publish_task(task, publisher)
    return len(due)


def resend_delay(resends: int, resend_after: float) -> float:
    """Seconds to wait after the `resends`-th re-send without news before the next one."""
    return min(resend_after * 2 ** min(resends, 20), max(MAX_RESEND_DELAY, resend_after))


def _claim_and_publish(
    session: Session, publisher: Publisher, now: datetime, statuses: list[str], quiet_for: float, delay_base: float,
) -> tuple[Sequence[Task], int]:
    """Claim (SKIP LOCKED) the tasks in `statuses` of online devices with no news for
    `quiet_for` seconds whose re-send is due, set their next one (`resend_delay` of
    `delay_base`), commit, then publish them. Returns the claimed tasks and how many were sent."""
    # EXISTS, not a join: unfinished tasks are few and online devices many (10,000), and with a
    # join SQLite walked every online device once a second.
    online = select(Device.id).where(Device.id == Task.device_id, Device.status == "online").exists()
    due = session.scalars(
        select(Task)
        .where(
            online,
            Task.status.in_(statuses),
            Task.type != UNKNOWN_TYPE,
            func.coalesce(Task.heard_at, Task.created_at) <= now - timedelta(seconds=quiet_for),
            or_(Task.resend_at.is_(None), Task.resend_at <= now),
            or_(Task.run_at.is_(None), Task.run_at <= now),
        )
        .order_by(Task.created_at, Task.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for task in due:
        task.resends += 1
        task.resend_at = now + timedelta(seconds=resend_delay(task.resends, delay_base))
    session.commit()
    sent = 0
    for task in due:
        if not publish_task(task, publisher):
            break  # not connected: they are due again at the next pass after `resend_at`
        sent += 1
    return due, sent


def resend_unheard(session: Session, publisher: Publisher, now: datetime, resend_after: float) -> int:
    """Publish again every unfinished task of an online device with no news for `resend_after`
    seconds (then twice as long after each re-send that brought none). Queued tasks whose
    message the broker never acknowledged are included. Returns how many were sent."""
    due, sent = _claim_and_publish(session, publisher, now, _values(lifecycle.UNFINISHED_STATUSES),
                                   resend_after, resend_after)
    if due:
        log.info("re-sent %d task(s) with no news for %g s or more (e.g. %s, %s, re-send %d)",
                 sent, resend_after, due[0].id, due[0].status, due[0].resends)
    return sent


def publish_unacked(session: Session, publisher: Publisher, now: datetime, grace: float) -> int:
    """Publish every queued task of an online device with no news (no PUBACK) for `grace`
    seconds: one accepted by a controller without a broker link, or left by a controller that
    died before its publish was acknowledged. The creating controller publishes at once and
    the PUBACK makes the task dispatched within milliseconds, so the grace keeps this off the
    normal path; a copy sent twice is answered from the device's journal. Returns how many."""
    due, sent = _claim_and_publish(session, publisher, now, [TaskStatus.QUEUED.value], grace, grace)
    if due:
        log.info("published %d queued task(s) no broker acknowledged within %g s (e.g. %s)", sent, grace, due[0].id)
    return sent


def release_due(session: Session, publisher: Publisher, now: datetime) -> int:
    """Publish, for the first time, every queued task of an online device whose `run_at` came.
    A released task is marked heard of now (it was never published, so nothing else set
    `heard_at`), which is what tells a released task from a waiting one, and gives it the
    usual grace before the unacked and re-send paths take over. Returns how many were sent."""
    online = select(Device.id).where(Device.id == Task.device_id, Device.status == "online").exists()
    due = session.scalars(
        select(Task)
        .where(Task.status == TaskStatus.QUEUED.value, Task.run_at <= now, Task.heard_at.is_(None), online)
        .order_by(Task.run_at, Task.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    rules: dict[tuple[str, str], PacingRule | None] = {}
    released: list[Task] = []
    for task in due:
        later = pacing.hold_back(session, task.account, task.type, now, rules)
        if later is not None:
            task.run_at = later  # its account's previous paced task went out late: keep the interval on the wire
            continue
        task.heard_at = now
        released.append(task)
    session.commit()
    sent = 0
    for task in released:
        if not publish_task(task, publisher, now):
            break  # not connected: the unacked and re-send paths send them later
        sent += 1
    if released:
        first = released[0]
        lateness = (now - first.run_at).total_seconds() if first.run_at else 0.0
        log.info("released %d task(s) whose run_at came (e.g. %s, %.3f s after its run_at)", sent, first.id, lateness)
    return sent


def next_release(session: Session, now: datetime) -> datetime | None:
    """The earliest run_at still to come of a queued task (index ix_tasks_due), so the sweeping
    controller can wake for it rather than up to a sweep interval late."""
    value = session.scalar(
        select(func.min(Task.run_at)).where(Task.status == TaskStatus.QUEUED.value, Task.run_at > now)
    )
    return value if isinstance(value, datetime) else None


def sweep(
    session: Session, publisher: Publisher, *, timeout_grace: float, resend_after: float | None = None,
    now: datetime | None = None, unacked_grace: float | None = None,
) -> SweepResult:
    """One pass of all seven (no re-sends when `resend_after` is None, no publishing of unacked
    tasks when `unacked_grace` is None); `now` is for tests."""
    now = now or utcnow()
    return SweepResult(
        expired=expire_overdue(session, now),
        released=release_due(session, publisher, now),
        timed_out=time_out_silent(session, publisher, now, timeout_grace),
        retried=start_due_retries(session, publisher, now),
        silent=mark_silent(session, now),
        resent=0 if resend_after is None else resend_unheard(session, publisher, now, resend_after),
        unacked=0 if unacked_grace is None else publish_unacked(session, publisher, now, unacked_grace),
    )
