"""Finding alerts in SQL: each rule kind looks for its condition and records one outbox row per
(rule, subject, occurrence) with INSERT … ON CONFLICT DO NOTHING, so a condition seen again on
the next pass, or by another controller at the same moment, is never recorded (or sent) twice.

Occurrences: device_offline — the id of the `device_connections` row that took the device
offline (one per offline period); presence — `<alert>:<id of the birth that raised it>`;
task_failed — the attempt number; account_login_expired — the task that set the status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config.settings_alerts import (
    AccountLoginExpiredRule,
    AlertRule,
    DeviceOfflineRule,
    PresenceRule,
    TaskFailedRule,
)
from controller.models import Account, AlertDelivery, Device, DeviceConnection, Task
from schemas.alerts import AlertEvent
from schemas.common import new_id

BATCH = 500  # candidates one rule looks at per pass


@dataclass(frozen=True)
class Found:
    """A condition a rule found: what about, which time, and the alert's text and data."""

    subject: str
    occurrence: str
    summary: str
    occurred_at: datetime
    data: dict[str, Any]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _not_recorded(rule: str, subject: Any, occurrence: Any) -> Any:
    """SQL: no outbox row of `rule` for this subject and occurrence yet."""
    return ~exists().where(AlertDelivery.rule == rule, AlertDelivery.subject == subject,
                           AlertDelivery.occurrence == occurrence)


def device_offline(session: Session, rule: DeviceOfflineRule, now: datetime) -> list[Found]:
    """Offline devices whose latest connection row (their going offline) is older than the rule's minutes."""
    # The latest connection row of each offline device first (a subquery per device, through the
    # device_id index), then a join by primary key. With the max() in the join condition, a
    # PostgreSQL that had ANALYZEd the tables ran it per connection row: 21 s for 10,000 devices.
    latest = (select(Device.id.label("device_id"), Device.name.label("name"),
                     select(func.max(DeviceConnection.id)).where(DeviceConnection.device_id == Device.id)
                     .correlate(Device).scalar_subquery().label("last_id"))
              .where(Device.status == "offline", Device.deleted_at.is_(None)).subquery())
    cutoff = now - timedelta(minutes=rule.minutes)
    rows = session.execute(
        select(latest.c.device_id, latest.c.name, DeviceConnection.id, DeviceConnection.at, DeviceConnection.reason)
        .join(DeviceConnection, DeviceConnection.id == latest.c.last_id)
        .where(DeviceConnection.state == "offline", DeviceConnection.at <= cutoff,
               _not_recorded(rule.name, latest.c.device_id, cast(DeviceConnection.id, String)))
        .order_by(DeviceConnection.id).limit(BATCH)
    ).all()
    return [
        Found(device_id, str(connection_id), f"device {device_id} offline for more than {rule.minutes:g} min"
              + (f" ({reason})" if reason else ""), at,
              {"device_id": device_id, "name": name, "offline_since": _iso(at), "reason": reason, "minutes": rule.minutes})
        for device_id, name, connection_id, at, reason in rows
    ]


def presence(session: Session, rule: PresenceRule, now: datetime) -> list[Found]:
    """Devices whose current session's birth raised a presence alert of one of the rule's kinds."""
    latest_birth = (select(func.max(DeviceConnection.id))
                    .where(DeviceConnection.device_id == Device.id, DeviceConnection.state == "online")
                    .correlate(Device).scalar_subquery())
    rows = session.execute(
        select(Device.id, Device.name, Device.presence_alert, DeviceConnection.id, DeviceConnection.at)
        .join(DeviceConnection, DeviceConnection.id == latest_birth)
        .where(Device.presence_alert.is_not(None)).order_by(Device.id).limit(BATCH)
    ).all()
    found: list[Found] = []
    quiet_since = now - timedelta(minutes=rule.quiet_minutes)
    for device_id, name, text, birth_id, at in rows:
        alert, _, detail = str(text).partition(":")
        if alert not in rule.alerts:
            continue
        recent = session.scalar(select(func.count()).select_from(AlertDelivery).where(
            AlertDelivery.rule == rule.name, AlertDelivery.subject == device_id,
            AlertDelivery.occurrence.startswith(f"{alert}:"), AlertDelivery.created_at >= quiet_since))
        already = session.scalar(select(func.count()).select_from(AlertDelivery).where(
            AlertDelivery.rule == rule.name, AlertDelivery.subject == device_id,
            AlertDelivery.occurrence == f"{alert}:{birth_id}"))
        if recent or already:
            continue
        found.append(Found(device_id, f"{alert}:{birth_id}", f"device {device_id}: {alert}", at,
                           {"device_id": device_id, "name": name, "alert": alert, "detail": detail.strip(),
                            "at": _iso(at)}))
    return found


def task_failed(session: Session, rule: TaskFailedRule, now: datetime) -> list[Found]:
    """Tasks that ended in one of the rule's statuses within its look-back (final ones only by default)."""
    # `status || ''`: look tasks up by the finished_at range (a few), not by the status index,
    # which on SQLite walked every failed task ever recorded (20,000 of 200,000: 90 ms a pass).
    query = (select(Task).where(Task.status.concat("").in_(rule.statuses),
                                Task.finished_at >= now - timedelta(minutes=rule.lookback_minutes),
                                _not_recorded(rule.name, Task.id, cast(Task.attempt, String)))
             .order_by(Task.finished_at).limit(BATCH))
    if rule.types:
        query = query.where(Task.type.in_(rule.types))
    found: list[Found] = []
    for task in session.scalars(query):
        if rule.final_only and task.retry_at is not None:
            continue  # checked here: in SQL, SQLite walked the retry_at index over every task
        platform = (task.params or {}).get("platform")
        if rule.platforms and platform not in rule.platforms:
            continue
        code = (task.error or {}).get("code")
        assert task.finished_at is not None
        found.append(Found(task.id, str(task.attempt),
                           f"task {task.id} ({task.type}) {task.status} on device {task.device_id}"
                           + (f": {code}" if code else ""), task.finished_at,
                           {"task_id": task.id, "device_id": task.device_id, "type": task.type, "account": task.account,
                            "platform": platform, "status": task.status, "attempt": task.attempt,
                            "error": task.error, "message": task.message, "finished_at": _iso(task.finished_at)}))
    return found


def account_login_expired(session: Session, rule: AccountLoginExpiredRule, now: datetime) -> list[Found]:
    """Accounts whose login expired, once per task (or change) that said so."""
    query = select(Account).where(Account.login_status == "expired").order_by(Account.name).limit(BATCH)
    if rule.platforms:
        query = query.where(Account.platform.in_(rule.platforms))
    accounts = list(session.scalars(query))
    if not accounts:
        return []
    seen = {(subject, occurrence) for subject, occurrence in session.execute(
        select(AlertDelivery.subject, AlertDelivery.occurrence).where(
            AlertDelivery.rule == rule.name, AlertDelivery.subject.in_([a.name for a in accounts])))}
    found: list[Found] = []
    for account in accounts:
        occurrence = account.status_task_id or f"at-{account.updated_at.isoformat()}"
        if (account.name, occurrence) in seen:
            continue
        found.append(Found(account.name, occurrence,
                           f"account {account.name} ({account.platform}): login expired; log it in again",
                           account.updated_at,
                           {"account": account.name, "platform": account.platform, "device_id": account.device_id,
                            "task_id": account.status_task_id, "since": _iso(account.updated_at)}))
    return found


FINDERS: dict[str, Callable[[Session, Any, datetime], list[Found]]] = {
    "device_offline": device_offline, "presence": presence, "task_failed": task_failed,
    "account_login_expired": account_login_expired,
}


def record(session: Session, rule_name: str, kind: str, found: Found, now: datetime) -> AlertEvent | None:
    """Insert the outbox row of `found` unless it exists (in the caller's transaction): its
    event, or None when this or another controller recorded it already."""
    delivery_id = new_id()
    event = AlertEvent(id=delivery_id, rule=rule_name, kind=kind, subject=found.subject,  # type: ignore[arg-type]
                       summary=found.summary[:400], occurred_at=found.occurred_at, created_at=now, data=found.data)
    row = {"id": delivery_id, "rule": rule_name, "kind": kind, "subject": found.subject[:200],
           "occurrence": found.occurrence[:200], "summary": event.summary, "payload": event.model_dump(mode="json"),
           "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # RETURNING tells an insert from a skipped one on every driver (a rowcount may be -1).
    inserted = session.execute(dialect.insert(AlertDelivery).values(row).on_conflict_do_nothing()
                               .returning(AlertDelivery.id)).first()
    return event if inserted is not None else None


def detect(session: Session, rules: Sequence[AlertRule], now: datetime, reader: Session | None = None) -> list[AlertEvent]:
    """One look for every rule's condition, the queries in `reader` (a read session: on SQLite
    it holds no write lock while it looks) or else `session`, the inserts in `session`, committed
    per rule; returns the alerts recorded by this call."""
    raised: list[AlertEvent] = []
    for rule in rules:
        found = FINDERS[rule.kind](reader or session, rule, now)
        if reader is not None:
            reader.rollback()  # end the read transaction: the next rule sees newer rows
        for one in found:
            event = record(session, rule.name, rule.kind, one, now)
            if event is not None:
                raised.append(event)
        session.commit()
    return raised
