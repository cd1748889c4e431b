"""The task envelope published on task topics, and the parameters of every built-in task type."""

from __future__ import annotations

from typing import Any

from pydantic import Field, HttpUrl

from schemas.common import StrictModel, TaskId, TaskType, UtcDatetime
from schemas.events import MAX_ATTEMPTS
from schemas.releases import UPDATE_TYPE, UpdateParams
from schemas.vault import SessionBackupParams, SessionRestoreParams

# Published on a device's task topic to stop a task, or to hand a running task what it waits
# for (a verification code); handled by the daemon itself, never journaled as tasks.
CANCEL_TYPE = "cancel"
INPUT_TYPE = "input"
CONTROL_TYPES = frozenset({CANCEL_TYPE, INPUT_TYPE})


class TaskEnvelope(StrictModel):
    """A command for a device. `id` may be left out by a hand-written `mosquitto_pub`
    message: the device then assigns one and reports it with every event."""

    id: TaskId | None = None
    type: TaskType
    account: str | None = Field(None, min_length=1, max_length=200, description="account the task acts for")
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: UtcDatetime | None = None
    expires_at: UtcDatetime | None = Field(None, description="not started by then: reported expired, never run")
    timeout: float | None = Field(None, gt=0, le=86_400, description="seconds the handler may run")
    broadcast_id: TaskId | None = Field(None, description="set on a device's run of a broadcast")
    attempt: int = Field(1, ge=1, le=MAX_ATTEMPTS, description="1, then 2, 3, … for the controller's retries")
    signed_at: UtcDatetime | None = Field(None, description="when signing is on: when the controller signed it")
    nonce: str | None = Field(None, min_length=8, max_length=64, pattern=r"^[0-9a-f]+$", description="used once")
    key_id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$", description="when signed: which controller key signed it")
    target: str | None = Field(None, min_length=1, max_length=300, description="when signed: the topic it was signed for")
    signature: str | None = Field(None, pattern=r"^[0-9a-f]{128}$", description="Ed25519, see schemas/signing.py")


# ---- parameters of the built-in task types ------------------------------------------------


class PingParams(StrictModel):
    """`ping`: report the device's facts."""


class EchoParams(StrictModel):
    """`echo`: return the given message/data unchanged (a round-trip check)."""

    message: str = Field("", max_length=10_000)
    data: dict[str, Any] = Field(default_factory=dict)


class SleepParams(StrictModel):
    """`sleep`: wait, reporting progress; a diagnostic for timeouts and cancellation."""

    seconds: float = Field(1.0, ge=0, le=3600)
    steps: int = Field(10, ge=1, le=100, description="progress events to send")


class AppendParams(StrictModel):
    """`append`: write a line to `<data dir>/appended-<device id>.log`, after waiting `before` and
    then `after` seconds. A real side effect that must never happen twice for one task (it is not
    safe to retry), so the fleet's exactly-once promise can be checked from outside."""

    line: str = Field("", max_length=1000, pattern=r"^[^\r\n]*$")
    before: float = Field(0.0, ge=0, le=3600)
    after: float = Field(0.0, ge=0, le=3600)


class CancelParams(StrictModel):
    """`cancel`: stop a queued or running task on the device."""

    task_id: TaskId
    attempt: int | None = Field(None, ge=1, le=MAX_ATTEMPTS, description="stop only this attempt; any when absent")


class InputParams(StrictModel):
    """`input`: give a running task a value it waits for, e.g. `{"name": "code", "value": "123456"}`."""

    task_id: TaskId
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    value: str = Field(max_length=4000)


class LoginParams(StrictModel):
    """`login`: log an account in through the platform's web login (QR code / SMS code)."""

    platform: str = Field(min_length=1, max_length=64)
    method: str = Field("qr", pattern=r"^(qr|sms|cookie_check)$")
    phone: str | None = Field(None, max_length=32)
    wait: float = Field(300, gt=0, le=3600, description="seconds to wait for the QR scan, and again for the code")


class UploadParams(StrictModel):
    """`upload`: publish a video with its metadata."""

    platform: str = Field(min_length=1, max_length=64)
    video_url: HttpUrl
    size: int | None = Field(None, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    title: str = Field(max_length=1000)
    description: str = Field("", max_length=5000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    cover_url: HttpUrl | None = None
    publish_at: UtcDatetime | None = Field(None, description="scheduled publish time")


class ChatParams(StrictModel):
    """`chat`: send a direct message to a user."""

    platform: str = Field(min_length=1, max_length=64)
    to: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=10_000)


BUILTIN_PARAMS: dict[str, type[StrictModel]] = {
    "ping": PingParams,
    "echo": EchoParams,
    "sleep": SleepParams,
    "append": AppendParams,
    CANCEL_TYPE: CancelParams,
    INPUT_TYPE: InputParams,
    "login": LoginParams,
    "upload": UploadParams,
    "chat": ChatParams,
    UPDATE_TYPE: UpdateParams,
    "session_backup": SessionBackupParams,
    "session_restore": SessionRestoreParams,
}
