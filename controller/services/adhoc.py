"""Tasks published straight to `devices/<id>/tasks` (an operator's `mosquitto_pub`) for a
device that is not online as far as the controller knows: recorded, so they are not lost.

Devices connect with clean sessions, so the broker drops a task for a device that is offline
or has never connected. The controller reads the task topics too; a task for such a device is
committed as queued (with a `devices` row for a device never seen before) and sent again on the
device's birth, like a task created through REST. A task for an online device is left to that
device, which reports it (and the controller records it from that report).

Tasks with an id run at most once whatever the timing (the device's journal). A task without
an id gets one here; if it reaches a device in the instant between its subscription and its
birth being recorded, that device runs it under an id of its own as well: give an id to a task
that must never run twice.

A device creates tasks here only under ids that are its own (`foreign_task_id`): a run of a
broadcast is `<broadcast id>:<its own id>`, and an id ending in another known device's id is
refused, so a compromised device cannot claim another device's broadcast run ahead of it.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from controller.models import Device, Task
from controller.services.task_rows import task_values
from controller.services.upsert import insert_ignore
from schemas.common import new_id, utcnow
from schemas.events import TaskEvent
from schemas.tasks import CONTROL_TYPES, TaskEnvelope

log = logging.getLogger(__name__)


def record_published(session: Session, device_id: str, envelope: TaskEnvelope) -> Task | None:
    """`stage_published`, committed."""
    task = stage_published(session, device_id, envelope)
    session.commit()
    return task


def stage_published(session: Session, device_id: str, envelope: TaskEnvelope) -> Task | None:
    """Record a task seen on `devices/<device_id>/tasks` when its device is not online, in the
    caller's transaction without committing it; None when it is the controller's own (already
    recorded), a control message, or its device is online."""
    if envelope.type in CONTROL_TYPES:
        return None  # cancel and input act on other tasks; an input's value is never stored
    if envelope.id is not None and session.get(Task, envelope.id) is not None:
        return None
    device = session.get(Device, device_id)
    if device is not None and device.status == "online":
        return None
    if device is None:  # another controller may insert it at the same moment
        insert_ignore(session, Device, {"id": device_id, "status": "offline", "created_at": utcnow()})
    values = task_values(
        id=envelope.id or new_id(),
        device_id=device_id,
        type=envelope.type,
        account=envelope.account,
        params=envelope.params,
        origin="adhoc",
        created_at=envelope.created_at,
        expires_at=envelope.expires_at,
        timeout=envelope.timeout,
    )
    if insert_ignore(session, Task, values) != 1:  # another controller recorded it, or its device reported it
        return None
    task = session.get(Task, values["id"])
    assert task is not None
    log.info("recorded ad hoc task %s (%s) for %s device %s; it is sent when the device is online",
             task.id, task.type, "unknown" if device is None else "offline", device_id)
    return task


def foreign_task_id(session: Session, device_id: str, event: TaskEvent) -> str | None:
    """Why `device_id` may not create the unknown task `event.task_id`, or None if it may: a
    broadcast run must be `<broadcast id>:<device_id>`, and no id may end in `:<another device>`."""
    task_id, summary = event.task_id, event.task
    if summary is not None and summary.broadcast_id is not None and task_id != f"{summary.broadcast_id}:{device_id}":
        return f"a run of broadcast {summary.broadcast_id} on device {device_id} is {summary.broadcast_id}:{device_id}"
    _head, colon, named = task_id.rpartition(":")
    if colon and named != device_id and session.get(Device, named) is not None:
        return f"the id names device {named}"
    return None
