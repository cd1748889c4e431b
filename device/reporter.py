"""Builds and publishes task events on `devices/<id>/results`, numbering them from the journal.

A final event is recorded in the journal before it is published, so a crash between the two
loses nothing: a redelivery of the task id is answered from the journal. The latest event of
each run still in progress is kept in memory, so a redelivery of a task that is still running
is answered with it (the controller may have lost it; a run of an earlier process is always
final, see `Executor.fail_interrupted`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from device.journal import Journal, RunRef
from schemas.common import utcnow
from schemas.errors import WireErrorCode
from schemas.events import FINAL_EVENTS, EventKind, TaskError, TaskEvent, TaskSummary

log = logging.getLogger(__name__)

MAX_MESSAGE = 4000
MAX_CODE = 64

Publish = Callable[[bytes], object]


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_error(code: WireErrorCode | str, message: str, retryable: bool | None = None) -> TaskError:
    return TaskError(code=clip(code, MAX_CODE), message=clip(message), retryable=retryable)


class Reporter:
    """Every event of this device goes through here: numbered, stamped, journaled, published."""

    def __init__(self, journal: Journal, device_id: str, session_id: Callable[[], str], publish: Publish) -> None:
        self._journal = journal
        self._device_id = device_id
        self._session_id = session_id
        self._publish = publish
        self._latest: dict[str, TaskEvent] = {}  # run key → its latest event, while not final

    def event(
        self,
        run: RunRef,
        kind: EventKind,
        *,
        progress: int | None = None,
        message: str | None = None,
        result: dict[str, Any] | None = None,
        error: TaskError | None = None,
        details: dict[str, Any] | None = None,
        task: TaskSummary | None = None,
        replay: bool = False,
        seq: int | None = None,
    ) -> TaskEvent:
        """A new event of a run, numbered with the journal's next seq unless `seq` is given."""
        return TaskEvent(
            task_id=run.task_id,
            device_id=self._device_id,
            event=kind,
            attempt=run.attempt,
            seq=self._journal.next_seq(run.key) if seq is None else seq,
            at=utcnow(),
            session_id=self._session_id(),
            progress=progress,
            message=None if message is None else clip(message),
            result=result,
            error=error,
            details=details,
            task=task,
            replay=replay,
        )

    def emit(self, run: RunRef, kind: EventKind, **fields: Any) -> TaskEvent:
        """Publish a non-final event."""
        assert kind not in FINAL_EVENTS, "final events go through finish()"
        event = self.event(run, kind, **fields)
        self._latest[run.key] = event
        self.publish(event)
        return event

    def latest(self, run: RunRef) -> TaskEvent | None:
        """The latest event published for a run in progress, if this process published one."""
        return self._latest.get(run.key)

    def finish(self, run: RunRef, kind: EventKind, *, publish: bool = True, **fields: Any) -> TaskEvent:
        """Record the final event in the journal, then publish it (unless `publish` is False)."""
        event = self.event(run, kind, **fields)
        self._journal.finish(run.key, event)
        self._latest.pop(run.key, None)
        if publish:
            self.publish(event)
        return event

    def replay(self, recorded: TaskEvent, task: TaskSummary) -> TaskEvent:
        """Re-send a recorded final event for a redelivered task id."""
        event = self.event(
            RunRef(recorded.task_id, recorded.attempt),
            recorded.event,
            message=recorded.message,
            result=recorded.result,
            error=recorded.error,
            task=recorded.task or task,
            replay=True,
        )
        self.publish(event)
        return event

    def reject(self, run: RunRef, error: TaskError, task: TaskSummary) -> TaskEvent:
        """Publish a rejection. Never journaled: it answers one message, not a task's life,
        so it has seq 0 and a later valid delivery of the same id still runs."""
        event = self.event(run, EventKind.REJECTED, error=error, task=task, seq=0)
        self.publish(event)
        return event

    def publish(self, event: TaskEvent) -> None:
        self._publish(event.model_dump_json(exclude_none=True).encode())
