"""`/api/v1/schedules`: recurring tasks and broadcasts (cron + time zone); docs/architecture.md#schedules."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from controller.api.deps import ReadSessionDep, SessionDep
from controller.api.security import Operate
from controller.services import schedules as service
from schemas.api import ErrorBody
from schemas.schedules import ScheduleCreate, ScheduleList, ScheduleOut

router = APIRouter(prefix="/schedules", tags=["schedules"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown schedule"}}


@router.post("", dependencies=[Operate], status_code=201, summary="Create a schedule",
             responses={409: {"model": ErrorBody, "description": "the name is taken"},
                        422: {"description": "invalid cron expression, time zone or action"}})
def create_schedule(session: SessionDep, body: ScheduleCreate) -> ScheduleOut:
    """At each time of `cron` (read in `timezone`) the controller holding the sweep lease creates
    `action`: `{"task": {...}}` (a POST /api/v1/tasks body) or `{"broadcast": {...}}`."""
    return service.out(service.create_schedule(session, body), upcoming=True)


@router.get("", summary="List schedules")
def list_schedules(session: ReadSessionDep) -> ScheduleList:
    return service.list_schedules(session)


@router.get("/{key}", summary="Get a schedule (by id or name) and its next 5 fire times", responses=NOT_FOUND)
def get_schedule(session: ReadSessionDep, key: str) -> ScheduleOut:
    return service.out(service.get_schedule(session, key), upcoming=True)


@router.post("/{key}/pause", dependencies=[Operate], summary="Pause a schedule", responses=NOT_FOUND)
def pause_schedule(session: SessionDep, key: str) -> ScheduleOut:
    return service.out(service.set_enabled(session, key, False))


@router.post("/{key}/resume", dependencies=[Operate], summary="Resume a schedule from its next fire time",
             responses=NOT_FOUND)
def resume_schedule(session: SessionDep, key: str) -> ScheduleOut:
    return service.out(service.set_enabled(session, key, True), upcoming=True)


@router.delete("/{key}", dependencies=[Operate], status_code=204, summary="Delete a schedule", responses=NOT_FOUND)
def delete_schedule(session: SessionDep, key: str) -> Response:
    service.delete_schedule(session, key)
    return Response(status_code=204)
