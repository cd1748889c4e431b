"""Events the controller cannot read (too deeply nested, not text, not a `TaskEvent`): each is
counted, and one that ends a task — or that cannot say what it is — fails that task with
`invalid_event`, so that a task whose device sent an unreadable result never stays `running`."""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from controller.models import Task
from controller.services.tasks import add_controller_event
from schemas.common import TASK_ID_PATTERN
from schemas.errors import WireErrorCode
from schemas.events import FINAL_EVENTS, EventKind, TaskStatus

log = logging.getLogger(__name__)

_FINAL_NAMES = frozenset(kind.value for kind in FINAL_EVENTS)


@dataclass(frozen=True)
class Salvage:
    """What could still be read of an unreadable event: its task id, attempt and kind."""

    task_id: str
    attempt: int | None
    event: str | None

    @property
    def ends_task(self) -> bool:
        """A final event, or one whose kind cannot be told (it may have been the final one)."""
        return self.event is None or self.event in _FINAL_NAMES


def salvage(payload: bytes | bytearray) -> Salvage | None:
    """The task id (and attempt and kind when they read) of an event pydantic refused, or None
    when not even that can be read. The stdlib parser reads deeper nesting than pydantic's."""
    try:
        data: Any = json.loads(bytes(payload).decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    task_id, attempt, event = data.get("task_id"), data.get("attempt"), data.get("event")
    if not isinstance(task_id, str) or re.fullmatch(TASK_ID_PATTERN, task_id) is None:
        return None
    return Salvage(task_id, attempt if isinstance(attempt, int) and attempt >= 1 else None,
                   event if isinstance(event, str) and event in {k.value for k in EventKind} else None)


def fail_task(session: Session, device_id: str, found: Salvage, reason: str) -> bool:
    """`stage_fail`, committed."""
    failed = stage_fail(session, device_id, found, reason)
    session.commit()
    return failed


def stage_fail(session: Session, device_id: str, found: Salvage, reason: str) -> bool:
    """Fail `found.task_id` with `invalid_event` when it is this device's, not yet final, and of
    the same attempt, in the caller's transaction without committing it; True when it was failed."""
    task = session.get(Task, found.task_id, with_for_update=True)
    if task is None or task.device_id != device_id or TaskStatus(task.status).is_final:
        return False
    if found.attempt is not None and found.attempt != task.attempt:
        return False
    message = f"device {device_id} sent a {found.event or 'task'} event the controller cannot read: {reason}"
    add_controller_event(session, task, EventKind.FAILED, message)
    task.error = {"code": WireErrorCode.INVALID_EVENT.value, "message": message, "retryable": False}
    log.warning("task %s failed: %s", task.id, message)
    return True


class Counter:
    """A thread-safe count of dropped messages, shown in /healthz."""

    def __init__(self) -> None:
        self._lock, self._value = threading.Lock(), 0

    def add(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        with self._lock:
            return self._value
