"""Broadcasts: one task for many devices, published once on a fleet or group topic.

Each target device gets its own `Task` named `<broadcast id>:<device id>` (devices derive the
same name from the envelope), so every run has its own status and timeline. Offline targets
(with `include_offline`) stay queued and get their run on their next birth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select
from sqlalchemy.orm import Session

from controller.models import Broadcast, Device, Task
from controller.services import idempotency
from controller.services.errors import InvalidRequestError, NotFoundError
from controller.services.idempotency import Answer, Claim, Staged
from controller.services.publisher import Publisher
from controller.services.task_create import check_params, check_size, requested_run_at, resolve_limits
from controller.services.task_rows import task_values
from schemas.api import BroadcastCreate, BroadcastOut
from schemas.common import new_id, utcnow
from schemas.tasks import BUILTIN_PARAMS, TaskEnvelope
from schemas.topics import BROADCAST_TASKS, group_tasks

log = logging.getLogger(__name__)


def run_id(broadcast_id: str, device_id: str) -> str:
    """The id of one device's run of a broadcast."""
    return f"{broadcast_id}:{device_id}"


def _targets(session: Session, body: BroadcastCreate) -> list[Row[str, str, list[str]]]:
    """(id, status, groups) of the devices the broadcast goes to: three columns, not whole
    devices (their JSON facts made reading 10,000 of them cost more than writing their tasks)."""
    query = select(Device.id, Device.status, Device.groups).where(Device.deleted_at.is_(None)).order_by(Device.id)
    if not body.include_offline:
        query = query.where(Device.status == "online")
    devices = list(session.execute(query))
    if body.group is not None:
        devices = [device for device in devices if body.group in (device.groups or [])]
    return devices


def _check_type(session: Session, body: BroadcastCreate) -> None:
    check_type(session, body.type, body.params)


def check_type(session: Session, task_type: str, params: dict[str, Any]) -> None:
    """A broadcast's (or job's) type must be built in (with valid params) or reported by some device."""
    if check_params(task_type, params):
        return
    reported = {t for device in session.scalars(select(Device)) for t in (device.facts or {}).get("task_types") or []}
    if task_type not in reported:
        raise InvalidRequestError(
            f"task type {task_type!r} is not built in and no known device supports it; "
            f"built-in types: {', '.join(sorted(BUILTIN_PARAMS))}"
            + (f"; types devices report: {', '.join(sorted(reported))}" if reported else "")
        )


def create_broadcast(
    session: Session, body: BroadcastCreate, publisher: Publisher, broadcast_id: str | None = None
) -> tuple[Broadcast, list[str]]:
    """Commit the broadcast and one task per target device, then publish one envelope."""
    broadcast, task_ids, publish = stage_broadcast(session, body, publisher, broadcast_id)
    session.commit()
    publish()
    return broadcast, task_ids


def create_broadcast_once(
    session: Session, body: BroadcastCreate, publisher: Publisher, claim: Claim | None, ttl: float
) -> Answer:
    """`create_broadcast` that creates nothing new for a request repeated with the same
    `Idempotency-Key` (docs/architecture.md#idempotent-task-creation): it answers the first
    request's answer again."""

    def stage() -> Staged:
        broadcast, _task_ids, publish = stage_broadcast(session, body, publisher)
        return Answer(201, get_broadcast(session, broadcast.id).model_dump(mode="json")), publish

    return idempotency.create_once(session, claim, ttl, stage)


def stage_broadcast(
    session: Session, body: BroadcastCreate, publisher: Publisher, broadcast_id: str | None = None
) -> tuple[Broadcast, list[str], Callable[[], None]]:
    """Add (and flush) the broadcast and one task per target device; the returned step
    publishes its envelope once they are committed.

    With a `run_at` still to come the runs wait `queued` with that run_at and nothing is
    published now: when it comes the sweeping controller sends each run on its device's own
    topic (`sweeper.release_due`), and an offline device gets its run on its next birth. The
    devices are the targets of the moment of the request."""
    _check_type(session, body)
    now = utcnow()
    run_at = requested_run_at(body, now)
    limits = resolve_limits(body, now, run_at)
    broadcast = Broadcast(
        id=broadcast_id or new_id(),
        type=body.type,
        account=body.account,
        params=body.params,
        group=body.group,
        include_offline=body.include_offline,
        created_at=now,
        expires_at=limits.expires_at,
        timeout=limits.timeout,
        max_retries=body.retries,
        retry_backoff=body.retry_backoff,
    )
    envelope = TaskEnvelope(
        id=broadcast.id,
        type=broadcast.type,
        account=broadcast.account,
        params=broadcast.params,
        created_at=broadcast.created_at,
        expires_at=broadcast.expires_at,
        timeout=broadcast.timeout,
    )
    check_size(envelope, publisher)
    targets = _targets(session, body)
    session.add(broadcast)
    session.flush()  # the broadcast row exists before the tasks that name it
    _insert_runs(session, broadcast, [device.id for device in targets], now, run_at)
    task_ids = [run_id(broadcast.id, device.id) for device in targets]
    online_ids = [run_id(broadcast.id, device.id) for device in targets if device.status == "online"]
    session.flush()
    return broadcast, task_ids, _publish_step(publisher, broadcast, envelope, task_ids, online_ids, run_at)


def _insert_runs(session: Session, broadcast: Broadcast, device_ids: list[str], now: datetime,
                 run_at: datetime | None) -> None:
    """One task per device, in one executemany INSERT of plain rows: as ORM objects a run cost
    150 us, 10,000 runs 1.5 s."""
    runs = [
        task_values(
            id=run_id(broadcast.id, device_id), device_id=device_id, type=broadcast.type, account=broadcast.account,
            params=broadcast.params, origin="broadcast", broadcast_id=broadcast.id, created_at=now,
            expires_at=broadcast.expires_at, timeout=broadcast.timeout, max_retries=broadcast.max_retries,
            retry_backoff=broadcast.retry_backoff, run_at=run_at,
        )
        for device_id in device_ids
    ]
    if runs:
        session.execute(insert(Task), runs)


def _publish_step(publisher: Publisher, broadcast: Broadcast, envelope: TaskEnvelope, task_ids: list[str],
                  online_ids: list[str], run_at: datetime | None) -> Callable[[], None]:
    """What publishes the broadcast once committed: one envelope on its topic, or nothing yet
    when its runs wait for `run_at`."""

    def publish() -> None:
        if run_at is not None:
            log.info("broadcast %s (%s): %d run(s) wait for %s", broadcast.id, broadcast.type, len(task_ids),
                     run_at.isoformat(timespec="seconds"))
            return
        topic = group_tasks(broadcast.group) if broadcast.group else BROADCAST_TASKS
        if not publisher.publish(topic, envelope, task_ids=online_ids):  # dispatched once the broker acks it
            log.warning("broadcast %s stays queued: the MQTT client is not connected", broadcast.id)
        log.info("broadcast %s (%s) to %s: %d device(s)", broadcast.id, broadcast.type, topic, len(task_ids))

    return publish


def get_broadcast(session: Session, broadcast_id: str) -> BroadcastOut:
    """A broadcast with its per-device runs and how many are in each status.

    A broadcast an operator published by hand is known only by the runs devices reported.
    """
    counts = {
        status: count
        for status, count in session.execute(
            select(Task.status, func.count()).where(Task.broadcast_id == broadcast_id).group_by(Task.status)
        )
    }
    task_ids = list(session.scalars(select(Task.id).where(Task.broadcast_id == broadcast_id).order_by(Task.id)))
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is not None:
        return BroadcastOut(
            id=broadcast.id,
            type=broadcast.type,
            group=broadcast.group,
            created_at=broadcast.created_at,
            task_ids=task_ids,
            status_counts=counts,
        )
    first = session.scalars(select(Task).where(Task.broadcast_id == broadcast_id).order_by(Task.created_at).limit(1)).first()
    if first is None:
        raise NotFoundError(f"broadcast {broadcast_id!r} does not exist; create one with POST /api/v1/broadcasts")
    return BroadcastOut(
        id=broadcast_id, type=first.type, group=None, created_at=first.created_at, task_ids=task_ids, status_counts=counts
    )
