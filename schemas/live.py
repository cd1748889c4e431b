"""The push stream's events (`GET /api/v1/events/stream`, Server-Sent Events): one JSON object
per SSE message, whose SSE `event:` name is its `kind`.

- `hello`: sent first on every connection; a client that reconnects refetches the state it shows
  (there is no replay: `Last-Event-ID` is not used);
- `task`: a task's status (or progress) changed;
- `task_event`: a device reported on a task (progress, details such as a QR code to scan, …);
- `presence`: a device went online or offline;
- `load`: a device's heartbeat (its load) was recorded;
- `alert`: an alert fired (device offline too long, task failed, login expired …);
- `dropped`: this connection fell behind and `count` events were left out; refetch the state.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from schemas.common import UtcDatetime, utcnow
from schemas.events import EventKind, TaskStatus
from schemas.status import DeviceMetrics

LiveKind = Literal["hello", "task", "task_event", "presence", "load", "alert", "dropped"]
LIVE_KINDS: tuple[str, ...] = ("hello", "task", "task_event", "presence", "load", "alert", "dropped")
ALWAYS_SENT = frozenset({"hello", "dropped"})  # whatever the `kinds` filter says


class LiveBase(BaseModel):
    at: UtcDatetime = Field(default_factory=utcnow, description="when the controller recorded it")


class Hello(LiveBase):
    kind: Literal["hello"] = "hello"
    controller: str = Field(description="the MQTT client id of the controller this stream comes from")


class TaskChange(LiveBase):
    kind: Literal["task"] = "task"
    task_id: str
    device_id: str
    type: str
    account: str | None = None
    status: TaskStatus
    progress: int | None = None


class TaskEventNotice(LiveBase):
    kind: Literal["task_event"] = "task_event"
    task_id: str
    device_id: str
    event: EventKind
    attempt: int = 1
    seq: int = 0
    progress: int | None = None
    message: str | None = None
    details: dict[str, Any] | None = Field(None, description="e.g. a QR code to scan, or what input the task waits for")


class PresenceChange(LiveBase):
    kind: Literal["presence"] = "presence"
    device_id: str
    status: Literal["online", "offline"]
    reason: str | None = None


class LoadReport(LiveBase):
    kind: Literal["load"] = "load"
    device_id: str
    metrics: DeviceMetrics | None = None


class AlertNotice(LiveBase):
    kind: Literal["alert"] = "alert"
    rule: str = Field(description="which alert rule fired, e.g. device_offline, task_failed, login_expired")
    message: str
    device_id: str | None = None
    task_id: str | None = None
    account: str | None = None


class Dropped(LiveBase):
    kind: Literal["dropped"] = "dropped"
    count: int = Field(ge=1, description="events left out because this connection read too slowly")


LiveEvent = Annotated[
    Hello | TaskChange | TaskEventNotice | PresenceChange | LoadReport | AlertNotice | Dropped,
    Field(discriminator="kind"),
]
LIVE_EVENT: TypeAdapter[LiveEvent] = TypeAdapter(LiveEvent)


def parse_live(data: str | bytes) -> LiveEvent:
    """One stream message's data as its event model (raises pydantic.ValidationError)."""
    return LIVE_EVENT.validate_json(data)
