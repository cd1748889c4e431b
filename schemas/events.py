"""What a device reports on `devices/<id>/results`, and the task states the controller derives."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from schemas.common import DeviceId, StrictModel, TaskId, TaskType, UtcDatetime


class EventKind(StrEnum):
    ACCEPTED = "accepted"  # valid, journaled, waiting for a slot
    STARTED = "started"  # the handler is running
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # invalid input: never retried
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"
    # Written by the controller only, never accepted from a device: a failed or timed-out task
    # is queued again as its next attempt.
    RETRYING = "retrying"


DEVICE_EVENTS = frozenset(kind for kind in EventKind if kind != EventKind.RETRYING)


class TaskStatus(StrEnum):
    QUEUED = "queued"  # committed in SQL, not yet published
    DISPATCHED = "dispatched"  # published to the broker
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


# The statuses a task ends in, defined here only; everything else (the final events, the
# controller, the tests, the CLI) derives from this set. They are StrEnum members, so
# `"succeeded" in FINAL_STATUSES` holds for plain strings too.
FINAL_STATUSES = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.REJECTED, TaskStatus.TIMED_OUT, TaskStatus.CANCELED, TaskStatus.EXPIRED}
)

STATUS_OF_EVENT: dict[EventKind, TaskStatus] = {
    EventKind.ACCEPTED: TaskStatus.ACCEPTED,
    EventKind.STARTED: TaskStatus.RUNNING,
    EventKind.PROGRESS: TaskStatus.RUNNING,
    EventKind.SUCCEEDED: TaskStatus.SUCCEEDED,
    EventKind.FAILED: TaskStatus.FAILED,
    EventKind.REJECTED: TaskStatus.REJECTED,
    EventKind.CANCELED: TaskStatus.CANCELED,
    EventKind.TIMED_OUT: TaskStatus.TIMED_OUT,
    EventKind.EXPIRED: TaskStatus.EXPIRED,
    EventKind.RETRYING: TaskStatus.QUEUED,
}

FINAL_EVENTS = frozenset(kind for kind, status in STATUS_OF_EVENT.items() if status in FINAL_STATUSES)
"""The events that end a run of a task (a device's `succeeded`, `failed`, ... ; not `retrying`)."""

MAX_ATTEMPTS = 100


class TaskError(StrictModel):
    code: str = Field(
        max_length=64,
        description="machine-readable reason: a schemas.errors.WireErrorCode, or a plug-in's own code"
    )
    message: str = Field(max_length=4000)
    retryable: bool | None = Field(
        None, description="whether running the task again is safe; false after a side effect may have happened"
    )


class TaskSummary(StrictModel):
    """The task as the device received it; lets the controller record ad hoc tasks it never created."""

    type: str = Field(max_length=64, description="task type, or 'invalid' when the message could not be read")
    account: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    broadcast_id: TaskId | None = None
    created_at: UtcDatetime | None = None
    expires_at: UtcDatetime | None = None
    source_topic: str | None = None


class TaskEvent(StrictModel):
    task_id: TaskId
    device_id: DeviceId
    event: EventKind
    attempt: int = Field(1, ge=1, le=MAX_ATTEMPTS, description="which run of the task (retries count up from 1)")
    seq: int = Field(ge=0, description="per-attempt counter, orders the events of one run of a task")
    at: UtcDatetime
    session_id: str = Field(max_length=64)
    progress: int | None = Field(None, ge=0, le=100)
    message: str | None = Field(None, max_length=4000, description="status detail or reason")
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    details: dict[str, Any] | None = Field(
        None, description="structured status details, e.g. a QR code to scan or what input the task waits for"
    )
    task: TaskSummary | None = Field(None, description="sent with accepted and rejected events")
    replay: bool = Field(False, description="a recorded outcome re-sent for a redelivered task id")


__all__ = ["EventKind", "TaskEvent", "TaskError", "TaskStatus", "TaskSummary", "TaskType"]
