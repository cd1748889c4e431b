"""Retention: deleting history older than its setting (FLEET_RETENTION_*), in bounded batches of
short transactions so a prune never holds long locks (docs/architecture.md#housekeeping).

Run every FLEET_PRUNE_INTERVAL by the holder of the sweep lease (`controller.scheduler`), or now
with `POST /api/v1/prune` / `fleet prune`. Deleting old rows is idempotent: two controllers that
both prune (a lease hand-over mid-prune) delete nothing twice.

- task events: by `received_at`;
- presence history (`device_connections`): by `at`, but never a device's latest row (alert
  detection reads a device's offline period from it);
- finished tasks (off by default): by `finished_at`, with their events, never one waiting for a retry;
- alert deliveries: delivered or failed ones, by `created_at` (pending ones are still being sent);
- idempotency keys: past their own `expires_at` (they already expire; pruned here too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from config.settings_housekeeping import HousekeepingSettings
from controller.models import AlertDelivery, DeviceConnection, IdempotencyKey, Task, TaskEventRecord
from schemas.events import FINAL_STATUSES

log = logging.getLogger(__name__)

IdQuery = Any  # a SELECT of row keys (one column, or two for idempotency keys), oldest first


@dataclass(frozen=True)
class Kind:
    name: str
    setting: str | None  # the retention field; None: rows carry their own expiry
    ids: Callable[[datetime], IdQuery]  # ids of the rows older than the cutoff, oldest first
    drop: Callable[[Session, list[Any]], object]


def _events(cutoff: datetime) -> IdQuery:
    return select(TaskEventRecord.id).where(TaskEventRecord.received_at < cutoff).order_by(TaskEventRecord.id)


def _connections(cutoff: datetime) -> IdQuery:
    later = aliased(DeviceConnection)
    newer = select(later.id).where(later.device_id == DeviceConnection.device_id, later.id > DeviceConnection.id)
    return (select(DeviceConnection.id).where(DeviceConnection.at < cutoff, newer.exists())
            .order_by(DeviceConnection.id))


def _tasks(cutoff: datetime) -> IdQuery:
    return (select(Task.id).where(Task.finished_at < cutoff, Task.status.in_(list(FINAL_STATUSES)),
                                  Task.retry_at.is_(None)).order_by(Task.finished_at))


def _alerts(cutoff: datetime) -> IdQuery:
    return (select(AlertDelivery.id).where(AlertDelivery.created_at < cutoff, AlertDelivery.state != "pending")
            .order_by(AlertDelivery.created_at))


def _keys(now: datetime) -> IdQuery:  # (endpoint, key) rows
    return select(IdempotencyKey.endpoint, IdempotencyKey.key).where(IdempotencyKey.expires_at <= now)


def _drop_tasks(session: Session, ids: list[Any]) -> None:
    session.execute(delete(TaskEventRecord).where(TaskEventRecord.task_id.in_(ids)))
    session.execute(delete(Task).where(Task.id.in_(ids)))


def _drop_keys(session: Session, ids: list[Any]) -> None:
    for endpoint, key in ids:  # (endpoint, key) rows
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.endpoint == endpoint, IdempotencyKey.key == key))


KINDS = (
    Kind("task_events", "retention_task_events", _events,
         lambda s, ids: s.execute(delete(TaskEventRecord).where(TaskEventRecord.id.in_(ids)))),
    Kind("device_connections", "retention_connections", _connections,
         lambda s, ids: s.execute(delete(DeviceConnection).where(DeviceConnection.id.in_(ids)))),
    Kind("tasks", "retention_tasks", _tasks, _drop_tasks),
    Kind("alert_deliveries", "retention_alert_deliveries", _alerts,
         lambda s, ids: s.execute(delete(AlertDelivery).where(AlertDelivery.id.in_(ids)))),
    Kind("idempotency_keys", None, _keys, _drop_keys),
)


def _count(session: Session, query: IdQuery) -> int:
    return int(session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)


def _cutoff(settings: HousekeepingSettings, kind: Kind, now: datetime) -> datetime | None:
    if kind.setting is None:
        return now
    keep: timedelta | None = getattr(settings, kind.setting)
    return None if keep is None else now - keep


def prune(session: Session, settings: HousekeepingSettings, now: datetime, *, dry_run: bool = False,
          batch: int | None = None) -> tuple[dict[str, int], list[str]]:
    """Delete (or with `dry_run` count) what is past its retention: ({kind: rows}, kinds kept for ever).
    Each batch of at most `batch` rows is its own transaction."""
    size = batch or settings.prune_batch
    deleted: dict[str, int] = {}
    never: list[str] = []
    for kind in KINDS:
        cutoff = _cutoff(settings, kind, now)
        if cutoff is None:
            never.append(kind.name)
            continue
        if dry_run:
            deleted[kind.name] = _count(session, kind.ids(cutoff))
            session.rollback()
            continue
        total = 0
        while True:
            rows = list(session.execute(kind.ids(cutoff).limit(size)))
            ids: list[Any] = [row[0] if len(row) == 1 else tuple(row) for row in rows]
            if not ids:
                break
            kind.drop(session, ids)
            session.commit()
            total += len(ids)
            if len(ids) < size:
                break
        session.rollback()
        deleted[kind.name] = total
    if not dry_run and any(deleted.values()):
        log.info("pruned old history: %s", ", ".join(f"{n} {name}" for name, n in deleted.items() if n))
    return deleted, never


class ScheduledPrune:
    """`prune` every FLEET_PRUNE_INTERVAL seconds, called by the scheduler while this controller
    holds the sweep lease (first run one interval after it took the lease)."""

    def __init__(self, settings: HousekeepingSettings, clock: Callable[[], float]) -> None:
        self._settings, self._clock = settings, clock
        self._next: float | None = None

    def __call__(self, session: Session, now: datetime) -> None:
        moment = self._clock()
        if self._next is None:
            self._next = moment + self._settings.prune_interval
        if moment < self._next:
            return
        self._next = moment + self._settings.prune_interval
        prune(session, self._settings, now)
