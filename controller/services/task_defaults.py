"""The expiry and timeout of a task created without them: the default of its type
(FLEET_TASK_DEFAULTS, docs/architecture.md#housekeeping), so no task waits or runs for ever.

Every creator calls `resolve` (single tasks, batches, broadcasts, retries; jobs and schedules
too): an explicit `ttl` or `expires_at` wins, else the type's default ttl; an explicit `timeout`
wins, else the type's default. The controller installs its settings' table with `use` at start;
until then (and in tests that build services alone) the shipped table applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from config.settings_housekeeping import ANY_TYPE, SHIPPED_TASK_DEFAULTS, TaskDefault
from controller.services.errors import InvalidRequestError

_table: dict[str, TaskDefault] = dict(SHIPPED_TASK_DEFAULTS)


class Limits(NamedTuple):
    expires_at: datetime
    timeout: float


def use(table: Mapping[str, TaskDefault]) -> None:
    """Install the defaults of the controller's settings (a table that holds `*`)."""
    global _table
    merged = dict(SHIPPED_TASK_DEFAULTS)
    merged.update(table)
    _table = merged


def default_for(task_type: str) -> TaskDefault:
    return _table.get(task_type) or _table[ANY_TYPE]


def resolve(task_type: str, now: datetime, *, ttl: float | None = None, expires_at: datetime | None = None,
            timeout: float | None = None) -> Limits:
    """The task's expiry and timeout: the given ones, else its type's defaults. An `expires_at`
    in the past is refused (422)."""
    default = default_for(task_type)
    if ttl is not None:
        expiry = now + timedelta(seconds=ttl)
    elif expires_at is not None:
        if expires_at <= now:
            raise InvalidRequestError("expires_at is in the past; give a future time or a ttl in seconds")
        expiry = expires_at
    else:
        expiry = now + timedelta(seconds=default.ttl)
    return Limits(expiry, timeout if timeout is not None else default.timeout)
