"""`new_task`: the one constructor of a task row, for REST tasks, broadcast runs and ad hoc
tasks alike, so every row starts with the same defaults (queued, attempt 1, never dispatched).
`task_values` is the same row as plain column values, for an executemany INSERT of many."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.models import Task
from schemas.common import utcnow
from schemas.events import TaskStatus


def new_task(**fields: Any) -> Task:
    """A queued task row (not yet added to a session); see `task_values` for the fields."""
    return Task(**task_values(**fields))


PLATFORM_LENGTH = 64


def platform_of(params: dict[str, Any] | None) -> str | None:
    """The social platform a task acts on (`params.platform` of login, upload and chat tasks),
    kept in a column of its own so statistics group by it in SQL."""
    value = (params or {}).get("platform")
    return value[:PLATFORM_LENGTH] if isinstance(value, str) and value else None


def task_values(
    *,
    id: str,
    device_id: str,
    type: str,
    origin: str,
    params: dict[str, Any] | None = None,
    account: str | None = None,
    broadcast_id: str | None = None,
    job_id: str | None = None,
    created_at: datetime | None = None,
    expires_at: datetime | None = None,
    timeout: float | None = None,
    max_retries: int = 0,
    retry_backoff: float = 5.0,
    attempt: int = 1,
    run_at: datetime | None = None,
) -> dict[str, Any]:
    """A queued task row's column values; `origin` is api, broadcast, job or adhoc."""
    now = utcnow()
    return dict(
        id=id,
        device_id=device_id,
        type=type,
        account=account,
        params=params or {},
        platform=platform_of(params),
        status=TaskStatus.QUEUED.value,
        origin=origin,
        broadcast_id=broadcast_id,
        job_id=job_id,
        created_at=created_at or now,
        updated_at=now,
        expires_at=expires_at,
        timeout=timeout,
        dispatch_count=0,
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        attempt=attempt,
        run_at=run_at,
    )
