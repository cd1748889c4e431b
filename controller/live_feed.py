"""What feeds the live bus (`controller.live`), always after a commit:

- `watch_sessions`: SQLAlchemy session hooks. While a session flushes, the Task, Device and
  TaskEventRecord objects it inserts or changes (status, progress) are noted; after its COMMIT
  they are published (after a rollback, forgotten). This covers every ORM write: REST (create,
  cancel, retry, input), the sweeper (expiries, timeouts, retries, silent devices) and ad hoc
  tasks. Sessions of the ingest writer's thread are skipped: the ingest path writes in bulk,
  without ORM objects, and is fed by `IngestFeed`.
- `IngestFeed`: called by the ingest writer after each batch committed, with the batch's
  messages. It publishes the devices' task events and heartbeats as they came, and the state
  the batch left behind (one SELECT of the tasks and one of the devices it touched; only
  while somebody is subscribed, so an unwatched controller pays nothing).

Nothing here runs in paho's network thread, and nothing here raises into its caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.util import identity_key

from controller.ingest import Acked
from controller.live import LiveBus
from controller.models import Device, Task, TaskEventRecord
from schemas.events import EventKind, TaskEvent, TaskStatus
from schemas.live import LiveEvent, LoadReport, PresenceChange, TaskChange, TaskEventNotice
from schemas.status import DeviceStatus, Heartbeat

log = logging.getLogger(__name__)

INGEST_THREAD = "fleet-ingest"  # controller.ingest.IngestWriter's thread name
_PENDING = "live_pending"
_CHUNK = 500


def _changed(obj: Any, *names: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def task_change(task: Task | Any) -> TaskChange:
    return TaskChange(task_id=task.id, device_id=task.device_id, type=task.type, account=task.account,
                      status=TaskStatus(task.status), progress=task.progress)


def _noted(session: Session) -> list[LiveEvent]:
    """The live events of what `session` is flushing."""
    found: list[LiveEvent] = []
    for obj in [*session.new, *session.dirty]:
        if isinstance(obj, Task) and (obj in session.new or _changed(obj, "status", "progress", "details")):
            found.append(task_change(obj))
        elif isinstance(obj, Device) and obj.status in ("online", "offline") and (
            obj in session.new or _changed(obj, "status")
        ):
            found.append(PresenceChange(device_id=obj.id, status=obj.status))
        elif isinstance(obj, TaskEventRecord) and obj in session.new:
            # never a lazy load in the middle of a flush: the task as the session holds it
            task = obj.__dict__.get("task") or session.identity_map.get(identity_key(Task, obj.task_id))
            device_id = task.device_id if task is not None else ""
            found.append(TaskEventNotice(task_id=obj.task_id, device_id=device_id, event=EventKind(obj.event),
                                         attempt=obj.attempt, seq=obj.seq, progress=obj.progress,
                                         message=obj.message, details=obj.details))
    return found


def watch_sessions(sessions: sessionmaker[Session], bus: LiveBus) -> None:
    """Publish the ORM changes of `sessions` after each commit (see the module docstring)."""

    @event.listens_for(sessions, "before_flush")
    def _note(session: Session, _context: Any, _instances: Any) -> None:
        if not bus.has_subscribers or threading.current_thread().name == INGEST_THREAD:
            return
        try:
            session.info.setdefault(_PENDING, []).extend(_noted(session))
        except Exception:  # a live event is never worth a failed write
            log.exception("could not note a live event")

    @event.listens_for(sessions, "after_commit")
    def _publish(session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        if pending:
            bus.publish(_latest(pending))

    @event.listens_for(sessions, "after_soft_rollback")
    def _forget(session: Session, _previous: Any) -> None:
        session.info.pop(_PENDING, None)


def _latest(events: list[LiveEvent]) -> list[LiveEvent]:
    """One `task` event per task (its last state) and one `presence` per device; the rest as is."""
    last: dict[tuple[str, str], int] = {}
    for index, item in enumerate(events):
        key = _key(item)
        if key is not None:
            last[key] = index
    return [item for index, item in enumerate(events) if (key := _key(item)) is None or last[key] == index]


def _key(item: LiveEvent) -> tuple[str, str] | None:
    if isinstance(item, TaskChange):
        return ("task", item.task_id)
    if isinstance(item, PresenceChange):
        return ("presence", item.device_id)
    return None


class IngestFeed:
    """The ingest writer's post-commit hook (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], bus: LiveBus) -> None:
        self._sessions, self._bus = sessions, bus

    def __call__(self, payloads: Sequence[object]) -> None:
        if not self._bus.has_subscribers:
            return
        try:
            self._bus.publish(self._events(payloads))
        except Exception:
            log.exception("could not publish the live events of an ingest batch")

    def _events(self, payloads: Sequence[object]) -> list[LiveEvent]:
        found: list[LiveEvent] = []
        task_ids: dict[str, None] = {}
        device_ids: dict[str, None] = {}
        for payload in payloads:
            if isinstance(payload, TaskEvent):
                found.append(TaskEventNotice(
                    task_id=payload.task_id, device_id=payload.device_id, event=payload.event, attempt=payload.attempt,
                    seq=payload.seq, progress=payload.progress, message=payload.message, details=payload.details,
                ))
                task_ids[payload.task_id] = None
            elif isinstance(payload, DeviceStatus):
                device_ids[payload.device_id] = None
            elif isinstance(payload, Acked):  # the broker took a task: it became dispatched
                task_ids.update(dict.fromkeys(payload.task_ids))
            elif isinstance(payload, Heartbeat):
                found.append(LoadReport(device_id=payload.device_id, metrics=payload.metrics))
        if task_ids or device_ids:
            with self._sessions() as session:
                found.extend(_task_states(session, list(task_ids)))
                found.extend(_device_states(session, list(device_ids)))
        return found


def _task_states(session: Session, task_ids: list[str]) -> list[LiveEvent]:
    found: list[LiveEvent] = []
    columns = (Task.id, Task.device_id, Task.type, Task.account, Task.status, Task.progress)
    for start in range(0, len(task_ids), _CHUNK):
        for row in session.execute(select(*columns).where(Task.id.in_(task_ids[start : start + _CHUNK]))):
            found.append(TaskChange(task_id=row.id, device_id=row.device_id, type=row.type, account=row.account,
                                    status=TaskStatus(row.status), progress=row.progress))
    return found


def _device_states(session: Session, device_ids: list[str]) -> list[LiveEvent]:
    found: list[LiveEvent] = []
    for start in range(0, len(device_ids), _CHUNK):
        query = select(Device.id, Device.status).where(Device.id.in_(device_ids[start : start + _CHUNK]))
        for device_id, status in session.execute(query):
            if status in ("online", "offline"):
                found.append(PresenceChange(device_id=device_id, status=status))
    return found
