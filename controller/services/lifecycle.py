"""The task state machine: which status changes are legal, and when a finished task is retried.

    queued → dispatched → accepted → running (progress) → succeeded | failed | rejected |
    timed_out | canceled | expired;   failed | timed_out → queued (the next attempt)

A device's events may skip states (a lost `accepted`) but never go back; anything after a
final status is refused, except the controller's own retry. Refused events stay in the task's
timeline with `applied = false`, so an operator sees what arrived late or out of order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas.errors import WireErrorCode
from schemas.events import TaskStatus

_FORWARD = [TaskStatus.QUEUED, TaskStatus.DISPATCHED, TaskStatus.ACCEPTED, TaskStatus.RUNNING]
RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.TIMED_OUT})
UNFINISHED_STATUSES = tuple(_FORWARD)
PENDING_STATUSES = (TaskStatus.QUEUED, TaskStatus.DISPATCHED)  # not yet on the device, as far as SQL knows
MAX_RETRY_DELAY = 3600.0
INTERRUPTED = WireErrorCode.INTERRUPTED


def can_move(current: TaskStatus, new: TaskStatus) -> bool:
    """Whether a task in `current` may move to `new` (running → running is a progress update)."""
    if current.is_final:
        return new == TaskStatus.QUEUED and current in RETRYABLE_STATUSES
    if new.is_final:
        return True
    if new == TaskStatus.RUNNING:
        return True
    return _FORWARD.index(new) > _FORWARD.index(current)


def retry_limit(max_retries: int, error: dict[str, Any] | None) -> int:
    """How many retries a task that ended with `error` may have.

    A failure the device marks as not safe to repeat (`retryable: false`: a side effect may
    have happened) is never retried. A task interrupted by a device crash that is safe to
    repeat (it never started, or its type is marked so) gets one re-run even without retries.
    """
    if error and error.get("retryable") is False:
        return 0
    if error and error.get("code") == INTERRUPTED and error.get("retryable") is True:
        return max(max_retries, 1)
    return max_retries


def next_retry_at(status: TaskStatus, attempt: int, max_retries: int, backoff: float,
                  error: dict[str, Any] | None, now: datetime) -> datetime | None:
    """When the next attempt of a task that just ended in `status` is due, or None for no retry.

    Delays double from `backoff` seconds with each attempt, up to an hour.
    """
    if status not in RETRYABLE_STATUSES or attempt > retry_limit(max_retries, error):
        return None
    return now + timedelta(seconds=min(backoff * 2 ** (attempt - 1), MAX_RETRY_DELAY))
