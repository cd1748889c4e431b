"""The retained presence message on `devices/<id>/status`: the device's birth and its last will."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import DeviceId, GroupName, StrictModel, UtcDatetime


class DeviceFacts(StrictModel):
    """What a device tells about itself in its birth message."""

    name: str = Field(max_length=200)
    version: str = Field(max_length=64)
    hostname: str = Field(max_length=255)
    os: str = Field(max_length=200)
    python: str = Field(max_length=64)
    task_types: list[str] = Field(default_factory=list)
    platforms: list[str] = Field(default_factory=list, description="social platforms this device can drive")
    accounts: list[str] = Field(default_factory=list)
    groups: list[GroupName] = Field(default_factory=list)
    max_concurrency: int = Field(1, ge=1)
    keepalive: int = Field(ge=1)
    heartbeat_interval: int | None = Field(
        None, ge=1, le=3600, description="seconds between heartbeats; none heard for 2 intervals means offline"
    )


class DeviceStatus(StrictModel):
    """Birth (`online`, with facts) or last will (`offline`).

    `session_id` names one connection of the daemon, `<boot id>-<n>` (see `boot_id`): a will
    whose session id is not the device's current one is stale and must not mark the device
    offline; births from two boot ids taking turns mean two daemons share one device id.
    """

    device_id: DeviceId
    state: Literal["online", "offline"]
    session_id: str = Field(min_length=1, max_length=64)
    at: UtcDatetime | None = Field(None, description="birth time; absent in a will (its publish time is unknown)")
    reason: str | None = Field(None, max_length=200)
    facts: DeviceFacts | None = None


def boot_id(session_id: str) -> str:
    """The daemon process a session id belongs to: `<boot id>-<n>` → `<boot id>`."""
    return session_id.rsplit("-", 1)[0]


class DeviceMetrics(StrictModel):
    """How loaded a device's PC is, read when a heartbeat is sent."""

    cpu_percent: float = Field(ge=0, le=100, description="CPU use since the previous heartbeat, all cores")
    memory_percent: float = Field(ge=0, le=100, description="RAM in use")
    disk_free_bytes: int = Field(ge=0, description="free space where the device keeps its data")


class Heartbeat(StrictModel):
    """Sent every `heartbeat_interval` seconds on `devices/<id>/heartbeat` (QoS 0, not retained),
    so the controller notices a device whose network vanished even where the broker never
    publishes its will, and sees how loaded the device is."""

    device_id: DeviceId
    session_id: str = Field(min_length=1, max_length=64)
    at: UtcDatetime
    running: int = Field(0, ge=0, description="tasks running on the device")
    metrics: DeviceMetrics | None = Field(None, description="absent when the device cannot read them")
