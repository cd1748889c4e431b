"""`/api/v1/broadcasts`: one task for every device (or every member of a group)."""

from __future__ import annotations

from fastapi import APIRouter

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep
from controller.api.security import Operate
from controller.services import broadcasts as service
from schemas.api import BroadcastCreate, BroadcastOut, ErrorBody

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])


@router.post("", dependencies=[Operate], status_code=201, summary="Broadcast a task")
def create_broadcast(session: SessionDep, publisher: PublisherDep, body: BroadcastCreate) -> BroadcastOut:
    """Published once on `fleet/broadcast/tasks` (or `fleet/groups/<group>/tasks`); each
    device's run is a task named `<broadcast id>:<device id>`."""
    broadcast, _task_ids = service.create_broadcast(session, body, publisher)
    return service.get_broadcast(session, broadcast.id)


@router.get("/{broadcast_id}", summary="Get a broadcast and its runs", responses={404: {"model": ErrorBody}})
def get_broadcast(session: ReadSessionDep, broadcast_id: str) -> BroadcastOut:
    return service.get_broadcast(session, broadcast_id)
