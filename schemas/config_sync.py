"""Fleet config and group membership: what the controller wants each device to run with
(`DesiredConfig`, retained on `devices/<id>/config`), what the device applied
(`ReportedConfig`, on `devices/<id>/config/reported`), and the REST bodies around them.

`REMOTE_SETTINGS` is the explicit allow-list of settings a device accepts remotely: each one is
applied live by the daemon (and by `fleet simulate`'s devices). Anything else in a desired
config is refused by the controller (422) and, should it reach a device anyway (an older or
newer device), rejected by the device with a reason, which the controller shows as drift. A
device may accept fewer (`FLEET_REMOTE_CONFIG_ALLOW` on that PC).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from schemas.common import DeviceId, GroupName, StrictModel, UtcDatetime

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

REMOTE_SETTINGS: dict[str, TypeAdapter[Any]] = {
    "heartbeat_interval": TypeAdapter(int),
    "max_concurrency": TypeAdapter(int),
    "log_level": TypeAdapter(LogLevel),
}
"""Setting name → its type; bounds in `REMOTE_BOUNDS`. Keep in step with the README table."""

REMOTE_BOUNDS: dict[str, tuple[int, int]] = {"heartbeat_interval": (1, 3600), "max_concurrency": (1, 64)}
REMOTE_HELP = ("heartbeat_interval (1–3600 s), max_concurrency (1–64 tasks at once), "
               "log_level (DEBUG, INFO, WARNING or ERROR)")

ConfigScope = Literal["global", "group", "device"]


def check_remote_setting(name: str, value: Any) -> tuple[Any, str | None]:
    """(the value as the device uses it, None) or (None, why it is refused)."""
    adapter = REMOTE_SETTINGS.get(name)
    if adapter is None:
        return None, f"not a remotely settable setting (allowed: {REMOTE_HELP})"
    try:
        checked = adapter.validate_python(value, strict=True)
    except ValidationError:
        return None, f"invalid value for {name} (allowed: {REMOTE_HELP})"
    bounds = REMOTE_BOUNDS.get(name)
    if bounds is not None and not bounds[0] <= checked <= bounds[1]:
        return None, f"{name} must be between {bounds[0]} and {bounds[1]}"
    return checked, None


def check_remote_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(accepted values, refused name → reason) of a settings dict."""
    accepted: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for name, value in values.items():
        checked, reason = check_remote_setting(name, value)
        if reason is None:
            accepted[name] = checked
        else:
            refused[name] = reason
    return accepted, refused


class DesiredConfig(StrictModel):
    """Retained on `devices/<id>/config` (QoS 1): the device's merged configuration and its groups.
    The device applies it on connect and whenever a new one arrives."""

    device_id: DeviceId
    revision: int = Field(ge=1, description="grows by one each time this device's desired config changes")
    groups: list[GroupName] = Field(default_factory=list, description="the groups whose task topics it subscribes to")
    settings: dict[str, Any] = Field(default_factory=dict, description="remote settings (REMOTE_SETTINGS)")
    at: UtcDatetime


class ReportedConfig(StrictModel):
    """Published by the device on `devices/<id>/config/reported` (QoS 1, not retained) after
    applying a `DesiredConfig`: what it now runs with, and what it refused and why."""

    device_id: DeviceId
    revision: int = Field(ge=0, description="the desired revision this answers")
    groups: list[GroupName] = Field(default_factory=list, description="group task topics it is subscribed to")
    applied: dict[str, Any] = Field(default_factory=dict)
    rejected: dict[str, str] = Field(default_factory=dict, description="setting → why the device refused it")
    at: UtcDatetime


# ---- REST ----------------------------------------------------------------------------------


class GroupsBody(StrictModel):
    groups: list[GroupName] = Field(max_length=64, description="the device's groups (replaces them all)")


class DeviceGroups(StrictModel):
    device_id: str
    groups: list[str] = Field(description="membership (the controller's: what broadcasts count and the broker allows)")
    declared: list[str] = Field(description="groups the device declared in its birth (FLEET_GROUPS on the PC)")
    declared_not_accepted: list[str] = Field(
        description="declared but not members: never counted (FLEET_ACCEPT_DECLARED_GROUPS=false, or removed)")
    broker: str | None = Field(None, description="what happened to the broker's ACL, when it changed")


class ConfigBody(StrictModel):
    settings: dict[str, Any] = Field(description=f"replaces this level's settings; allowed: {REMOTE_HELP}")


class ConfigLevel(StrictModel):
    scope: ConfigScope
    name: str = Field(description="'' for global, else the group or device id")
    settings: dict[str, Any]
    updated_at: UtcDatetime | None = None


class DriftItem(StrictModel):
    setting: str = Field(description="a setting name, or 'groups'")
    desired: Any = None
    reported: Any = None
    reason: str = Field(description="rejected by the device (its reason), not applied yet, or different")


class DeviceConfigView(StrictModel):
    device_id: str
    revision: int = Field(description="desired revision (0: nothing desired was ever published)")
    desired: dict[str, Any]
    sources: dict[str, str] = Field(description="setting → the level it came from: global, group:<g> or device")
    groups: list[str]
    reported: ReportedConfig | None
    drift: list[DriftItem]
    in_sync: bool


NOT_ALLOWED_HERE = "not accepted remotely on this device (its FLEET_REMOTE_CONFIG_ALLOW)"


def decide(settings: dict[str, Any], allow: list[str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """What a device does with desired `settings`: (values it applies, setting → why it refuses
    it). `allow`: the device's own FLEET_REMOTE_CONFIG_ALLOW (None: all of REMOTE_SETTINGS)."""
    accepted, rejected = check_remote_settings(settings)
    if allow is not None:
        for name in [n for n in accepted if n not in allow]:
            del accepted[name]
            rejected[name] = NOT_ALLOWED_HERE
    return accepted, rejected
