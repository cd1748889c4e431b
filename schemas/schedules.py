"""REST bodies of schedules (`/api/v1/schedules`) and pacing rules (`/api/v1/pacing`).

A schedule's `action` says what each fire time creates, as a one-key object: `{"task": {...}}`
(a `TaskCreate` body), `{"broadcast": {...}}` (a `BroadcastCreate` body) or `{"job": {...}}` (a
`JobCreate` body). The union is discriminated by that key (`_action_kind`).
The cron expression itself is checked by the controller (with croniter), the time zone here.
"""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, Discriminator, Field, Tag, field_validator

from schemas.api import BroadcastCreate, TaskCreate
from schemas.common import StrictModel, TaskType, UtcDatetime
from schemas.jobs import JobCreate

SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
ALL_ACCOUNTS = "*"  # a pacing rule for every account without a rule of its own


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name[:64]!r}; give an IANA name such as Asia/Shanghai, Europe/Berlin or UTC"
        ) from None
    return name


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_zone)]


def _no_timing(options: TaskCreate | BroadcastCreate | JobCreate) -> None:
    if options.run_at is not None:
        raise ValueError("a scheduled action runs at its cron times; leave run_at out")
    if options.expires_at is not None:
        raise ValueError("an absolute expires_at would pass after one fire time; give ttl (seconds from each fire time)")


class TaskAction(StrictModel):
    """Create one task at each fire time (its id: `<schedule id>-<slot>`)."""

    task: TaskCreate

    @field_validator("task")
    @classmethod
    def _task(cls, task: TaskCreate) -> TaskCreate:
        if task.id is not None:
            raise ValueError("a scheduled task gets its id from the schedule and the fire time; leave id out")
        _no_timing(task)
        return task


class BroadcastAction(StrictModel):
    """Create one broadcast at each fire time (its id: `<schedule id>-<slot>`)."""

    broadcast: BroadcastCreate

    @field_validator("broadcast")
    @classmethod
    def _broadcast(cls, broadcast: BroadcastCreate) -> BroadcastCreate:
        _no_timing(broadcast)
        return broadcast


class JobAction(StrictModel):
    """Create one job at each fire time (its id: `<schedule id>-<slot>`), rolled out as it says."""

    job: JobCreate

    @field_validator("job")
    @classmethod
    def _job(cls, job: JobCreate) -> JobCreate:
        _no_timing(job)
        return job


ACTION_KINDS = ("task", "broadcast", "job")


def _action_kind(value: Any) -> str | None:
    """The arm of a `ScheduleAction`: its one key (None, an error naming the kinds, otherwise)."""
    if isinstance(value, BaseModel):
        return next((kind for kind in ACTION_KINDS if hasattr(value, kind)), None)
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        return kind if kind in ACTION_KINDS else None
    return None


ScheduleAction = Annotated[
    Annotated[TaskAction, Tag("task")] | Annotated[BroadcastAction, Tag("broadcast")] | Annotated[JobAction, Tag("job")],
    Discriminator(_action_kind, custom_error_type="action_kind",
                  custom_error_message='give exactly one of {"task": {...}}, {"broadcast": {...}} or {"job": {...}}'),
]


class ScheduleCreate(StrictModel):
    name: str = Field(pattern=SCHEDULE_NAME_PATTERN, description="unique name (letters, digits, . _ -)")
    cron: str = Field(
        min_length=1, max_length=200, examples=["0 9 * * 1-5"],
        description="5 fields (minute hour day month weekday), or 6 with seconds LAST (croniter's order)",
    )
    timezone: TimeZoneName = Field(description="IANA time zone the cron times are read in, e.g. Asia/Shanghai")
    action: ScheduleAction
    enabled: bool = Field(True, description="false creates it paused")


class ScheduleOut(BaseModel):
    id: str
    name: str
    cron: str
    timezone: str
    action: dict[str, Any]
    enabled: bool
    next_run_at: UtcDatetime | None = Field(description="the slot due next (None while paused)")
    last_run_at: UtcDatetime | None = Field(description="the slot that fired last")
    last_fired_at: UtcDatetime | None = Field(description="when it fired (later than its slot when it was missed)")
    last_result: str | None = Field(description="the id of the task or broadcast the last firing created")
    last_error: str | None = Field(description="why the last firing created nothing, if it failed")
    skipped: int = Field(description="missed slots never fired (the controller was down), in all")
    last_skip: str | None = Field(description="which missed slots were skipped last, and why")
    created_at: UtcDatetime
    upcoming: list[UtcDatetime] = Field(default_factory=list, description="the next fire times (GET of one schedule)")


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class PacingRuleIn(StrictModel):
    account: str = Field(min_length=1, max_length=200, description=f"the account, or {ALL_ACCOUNTS!r} for every "
                         "account without a rule of its own")
    type: TaskType = Field(description="the task type paced, e.g. chat")
    interval: float = Field(gt=0, le=30 * 86_400, description="least seconds between two tasks' run_at")
    jitter: float = Field(0.0, ge=0, le=30 * 86_400, description="up to this many seconds more, at random")


class PacingRuleOut(BaseModel):
    account: str
    type: TaskType
    interval: float
    jitter: float
    updated_at: UtcDatetime
    last_run_at: UtcDatetime | None = Field(None, description="the run_at the account's latest paced task got")


class PacingList(BaseModel):
    items: list[PacingRuleOut]

