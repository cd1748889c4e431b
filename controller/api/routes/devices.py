"""`/api/v1/devices`: the devices that have connected, their facts and presence history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from controller.api.deps import ReadSessionDep, SessionDep
from controller.api.security import Operate
from controller.services import devices as service
from controller.services import targets
from schemas.api import ConnectionOut, DeviceOut, DevicePage, ErrorBody
from schemas.targets import TAG_EXPRESSION_MAX, TagsChange, TagsReplace

router = APIRouter(prefix="/devices", tags=["devices"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown device"}}


@router.get("", summary="List devices")
def list_devices(
    session: ReadSessionDep,
    status: Literal["online", "offline"] | None = None,
    group: Annotated[str | None, Query(max_length=64, description="only members of this group")] = None,
    q: Annotated[str | None, Query(max_length=200, description="part of the id or name")] = None,
    tags: Annotated[str | None, Query(max_length=TAG_EXPRESSION_MAX, description="a tag expression, e.g. "
                                      "`platform=douyin and region in (sh, bj)`")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> DevicePage:
    expression = targets.expression(tags) if tags is not None else None
    items, total = service.list_devices(
        session, status=status, group=group, q=q, tags=expression, limit=limit, offset=offset
    )
    return DevicePage(items=[DeviceOut.model_validate(d) for d in items], total=total, limit=limit, offset=offset)


@router.get("/{device_id}", summary="Get a device", responses=NOT_FOUND)
def get_device(session: ReadSessionDep, device_id: str) -> DeviceOut:
    return DeviceOut.model_validate(service.get_device(session, device_id))


@router.get("/{device_id}/connections", summary="Presence history of a device, newest first", responses=NOT_FOUND)
def list_connections(session: ReadSessionDep, device_id: str) -> list[ConnectionOut]:
    return [ConnectionOut.model_validate(c) for c in service.connections(session, device_id)]


@router.put("/{device_id}/tags", dependencies=[Operate], summary="Replace a device's tags", responses=NOT_FOUND)
def replace_tags(session: SessionDep, device_id: str, body: TagsReplace) -> DeviceOut:
    """Its tags become exactly these (`{}` removes them all); jobs and dry runs select by them."""
    return DeviceOut.model_validate(targets.replace_tags(session, device_id, body.tags))


@router.patch("/{device_id}/tags", dependencies=[Operate], summary="Set or remove some tags", responses=NOT_FOUND)
def change_tags(session: SessionDep, device_id: str, body: TagsChange) -> DeviceOut:
    return DeviceOut.model_validate(targets.change_tags(session, device_id, body))
