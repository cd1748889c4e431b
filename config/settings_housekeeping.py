"""Settings of housekeeping (docs/architecture.md#housekeeping): the default expiry and timeout of
each task type, and how long history is kept before the scheduled prune deletes it.

`task_defaults` maps a task type (or `*`, every other type) to a `ttl` (seconds a task may wait
to start) and a `timeout` (seconds it may run). In fleet.toml as `[task_defaults.login]` tables,
in FLEET_TASK_DEFAULTS as a JSON object. What is given replaces the shipped values of those
types only; the shipped `*` stays unless replaced, so no task ever waits forever.

Retention settings are durations (`30d`, `12h`, `90m`, `3600s`, `2w`) or `never`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings

ANY_TYPE = "*"
TTL_MAX = 30 * 86_400.0  # as TaskOptions.ttl
TIMEOUT_MAX = 86_400.0  # as TaskOptions.timeout
DURATION_PATTERN = r"^[1-9][0-9]{0,5}[smhdw]$"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
TYPE_PATTERN = r"^(\*|[a-z][a-z0-9_.-]{0,63})$"


class TaskDefault(BaseModel):
    """The ttl and timeout a task of one type gets when its create request gives none."""

    model_config = ConfigDict(extra="forbid")

    ttl: float = Field(gt=0, le=TTL_MAX, description="seconds the task may wait to start before it expires")
    timeout: float = Field(gt=0, le=TIMEOUT_MAX, description="seconds its handler may run")


# Shipped defaults: a login waits for a person to scan a QR code (LoginParams.wait, 300 s, twice
# with an SMS code), so it is stale after 10 minutes and may run 15; an upload of a large video
# may wait a day for its PC and run an hour; a chat reply is stale after an hour.
SHIPPED_TASK_DEFAULTS: dict[str, TaskDefault] = {
    ANY_TYPE: TaskDefault(ttl=86_400, timeout=3600),
    "login": TaskDefault(ttl=600, timeout=900),
    "upload": TaskDefault(ttl=86_400, timeout=3600),
    "chat": TaskDefault(ttl=3600, timeout=300),
}


def parse_task_defaults(value: Any) -> dict[str, TaskDefault]:
    """The shipped defaults with the given types replaced; a ValueError names the type and field."""
    if isinstance(value, str):
        raise ValueError('give a JSON object of task types, e.g. {"login": {"ttl": 600, "timeout": 900}, '
                         '"*": {"ttl": 86400, "timeout": 3600}}')
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of task types, got {type(value).__name__}")
    merged = dict(SHIPPED_TASK_DEFAULTS)
    for task_type, raw in value.items():
        if not isinstance(task_type, str) or re.fullmatch(TYPE_PATTERN, task_type) is None:
            raise ValueError(f"{task_type!r} is not a task type (lower-case letters, digits, . _ -) or '*'")
        if isinstance(raw, TaskDefault):
            merged[task_type] = raw
            continue
        if not isinstance(raw, dict) or set(raw) - {"ttl", "timeout"}:
            raise ValueError(f"task type {task_type!r}: give a table with ttl and timeout (seconds), nothing else")
        base = merged.get(task_type, merged[ANY_TYPE])
        try:
            merged[task_type] = TaskDefault.model_validate({**base.model_dump(), **raw})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"task type {task_type!r}: field {first['loc'][0]!r}: {first['msg']} "
                             f"(ttl at most {TTL_MAX:.0f}, timeout at most {TIMEOUT_MAX:.0f} seconds)") from None
    return merged


def parse_retention(value: Any) -> timedelta | None:
    """`30d` → 30 days; `never` (or null) → None (kept for ever)."""
    if value is None or isinstance(value, timedelta):
        return value
    text = str(value).strip().lower()
    if text in ("never", "none", ""):
        return None
    if re.fullmatch(DURATION_PATTERN, text) is None:
        raise ValueError(f"{value!r} is not a duration: write a number and a unit s, m, h, d or w (e.g. 30d), "
                         "or never")
    return timedelta(seconds=int(text[:-1]) * DURATION_UNITS[text[-1]])


class HousekeepingSettings(BaseSettings):
    """Default expiry and timeout per task type; retention of history and the scheduled prune."""

    task_defaults: dict[str, TaskDefault] = Field(
        default_factory=lambda: dict(SHIPPED_TASK_DEFAULTS),
        description="ttl and timeout (seconds) of tasks created without them, per task type and '*' for the rest: "
        'a JSON object in env vars ({"login": {"ttl": 600, "timeout": 900}}), [task_defaults.<type>] tables in '
        "fleet.toml; replaces the shipped values of the types given",
    )
    retention_task_events: timedelta | None = Field(
        timedelta(days=30), description="how long task events (timelines) are kept: a duration like 30d, or never")
    retention_connections: timedelta | None = Field(
        timedelta(days=30), description="how long presence history (device_connections) is kept, a device's latest "
        "row always: a duration like 30d, or never")
    retention_tasks: timedelta | None = Field(
        None, description="how long finished tasks (and their events) are kept after they ended: a duration like "
        "90d, or never (the default)")
    retention_alert_deliveries: timedelta | None = Field(
        timedelta(days=30), description="how long delivered or failed alert deliveries are kept: a duration, or never")
    prune_interval: float = Field(
        3600.0, ge=1, le=7 * 86_400, description="seconds between two scheduled prunes (run by the controller "
        "holding the sweep lease)")
    prune_batch: int = Field(
        1000, ge=10, le=100_000, description="rows deleted per transaction by a prune (short transactions: no long locks)")

    @field_validator("task_defaults", mode="before")
    @classmethod
    def _task_defaults(cls, value: Any) -> dict[str, TaskDefault]:
        return parse_task_defaults(value)

    @field_validator("retention_task_events", "retention_connections", "retention_tasks",
                     "retention_alert_deliveries", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> timedelta | None:
        return parse_retention(value)
