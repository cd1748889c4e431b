"""Group membership and fleet config: `/api/v1/devices/{id}/groups`, `/api/v1/config`,
`/api/v1/groups/{group}/config`, `/api/v1/devices/{id}/config` and `/api/v1/config/drift`
(docs/architecture.md#groups-and-fleet-config). Writes need the operate scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, SettingsDep, write_turn
from controller.api.security import Operate
from controller.services import fleet_config, groups
from schemas.api import ErrorBody
from schemas.common import GROUP_PATTERN
from schemas.config_sync import ConfigBody, ConfigLevel, DeviceConfigView, DeviceGroups, GroupsBody

router = APIRouter(tags=["groups and config"])

Group = Annotated[str, Path(pattern=GROUP_PATTERN, description="a group name (letters, digits, . _ -)")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown device"}}
INVALID: dict[int | str, dict[str, Any]] = {422: {"model": ErrorBody, "description": "a setting not in the allow-list, "
                                                  "or a value out of bounds"}}


@router.get("/devices/{device_id}/groups", summary="A device's groups: members, and declared but not accepted",
            responses=NOT_FOUND)
def get_groups(session: ReadSessionDep, device_id: str) -> DeviceGroups:
    return groups.get_groups(session, device_id)


@router.put("/devices/{device_id}/groups", dependencies=[Operate], responses=NOT_FOUND,
            summary="Set a device's groups; its broker ACL and the device follow at once")
def set_groups(request: Request, session: SessionDep, settings: SettingsDep, publisher: PublisherDep, device_id: str,
               body: GroupsBody) -> DeviceGroups:
    with write_turn(request, session):
        return groups.change_groups(session, device_id, settings, publisher, replace=body.groups)


@router.post("/devices/{device_id}/groups/{group}", dependencies=[Operate], responses=NOT_FOUND,
             summary="Add a device to a group")
def add_group(request: Request, session: SessionDep, settings: SettingsDep, publisher: PublisherDep, device_id: str,
              group: Group) -> DeviceGroups:
    with write_turn(request, session):
        return groups.change_groups(session, device_id, settings, publisher, add=[group])


@router.delete("/devices/{device_id}/groups/{group}", dependencies=[Operate], responses=NOT_FOUND,
               summary="Remove a device from a group")
def remove_group(request: Request, session: SessionDep, settings: SettingsDep, publisher: PublisherDep, device_id: str,
                 group: Group) -> DeviceGroups:
    with write_turn(request, session):
        return groups.change_groups(session, device_id, settings, publisher, remove=[group])


@router.get("/config", summary="Every desired config level: global, per group, per device")
def list_levels(session: ReadSessionDep) -> list[ConfigLevel]:
    return fleet_config.list_levels(session)


@router.put("/config", dependencies=[Operate], responses=INVALID,
            summary="Set the global desired config (published to every device, retained)")
def set_global(request: Request, session: SessionDep, publisher: PublisherDep, body: ConfigBody) -> ConfigLevel:
    with write_turn(request, session):
        return fleet_config.set_and_publish(session, "global", "", body.settings, publisher)


@router.put("/groups/{group}/config", dependencies=[Operate], responses=INVALID,
            summary="Set a group's desired config (published to its members, retained)")
def set_group(request: Request, session: SessionDep, publisher: PublisherDep, group: Group, body: ConfigBody) -> ConfigLevel:
    with write_turn(request, session):
        return fleet_config.set_and_publish(session, "group", group, body.settings, publisher)


@router.put("/devices/{device_id}/config", dependencies=[Operate], responses={**NOT_FOUND, **INVALID},
            summary="Set a device's own desired config (over its groups' and the global one)")
def set_device(request: Request, session: SessionDep, publisher: PublisherDep, device_id: str,
               body: ConfigBody) -> ConfigLevel:
    with write_turn(request, session):
        return fleet_config.set_and_publish(session, "device", device_id, body.settings, publisher)


@router.get("/devices/{device_id}/config", responses=NOT_FOUND,
            summary="A device's desired config (merged, with sources), what it reported, and the drift")
def get_device_config(session: ReadSessionDep, device_id: str) -> DeviceConfigView:
    return fleet_config.view(session, device_id)


@router.get("/config/drift", summary="Devices whose reported config differs from the desired one")
def get_drift(session: ReadSessionDep) -> list[DeviceConfigView]:
    return fleet_config.drift(session)
