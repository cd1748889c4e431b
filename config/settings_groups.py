"""Settings of group membership and fleet config (docs/architecture.md#groups-and-fleet-config).

`accept_declared_groups` is the controller's: whether the groups a device declares in its birth
(its FLEET_GROUPS) become memberships. `remote_config_allow` is the device's: which of the
remotely settable settings (`schemas.config_sync.REMOTE_SETTINGS`) this PC accepts from the
controller's desired config.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from schemas.config_sync import REMOTE_HELP, REMOTE_SETTINGS


class GroupSettings(BaseSettings):
    accept_declared_groups: bool = Field(
        False,
        description="controller: adopt the groups a device declares in its birth as memberships (default false: "
        "membership is set on the controller only, declared groups are shown but never counted)",
    )
    remote_config_allow: list[str] | None = Field(
        None,
        description=f"device: which remote settings it accepts from the controller (JSON list; default all: {REMOTE_HELP})",
    )

    @field_validator("remote_config_allow")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or []) - REMOTE_SETTINGS.keys())
        if unknown:
            raise ValueError(f"unknown remote setting(s) {', '.join(unknown)}; allowed: {', '.join(REMOTE_SETTINGS)}")
        return value
