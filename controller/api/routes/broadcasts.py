"""`/api/v1/broadcasts`: one task for every device (or every member of a group)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep
from controller.api.idempotent import IdempotencyKeyHeader, prune_if_due, respond, ttl
from controller.api.security import Operate
from controller.services import broadcasts as service
from controller.services import idempotency
from schemas.api import BroadcastCreate, BroadcastOut, ErrorBody

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])


@router.post(
    "", dependencies=[Operate], status_code=201, response_model=BroadcastOut, summary="Broadcast a task",
    responses={422: {"description": "invalid task, or an Idempotency-Key already used with another body"}},
)
def create_broadcast(
    request: Request, session: SessionDep, publisher: PublisherDep, body: BroadcastCreate,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Published once on `fleet/broadcast/tasks` (or `fleet/groups/<group>/tasks`); each
    device's run is a task named `<broadcast id>:<device id>`. Sent again with the same
    `Idempotency-Key` and body, it creates nothing new and answers the first answer again."""
    claim = idempotency.claim("POST /api/v1/broadcasts", idempotency_key, body)
    answer = service.create_broadcast_once(session, body, publisher, claim, ttl(request))
    prune_if_due(request)
    return respond(answer)


@router.get("/{broadcast_id}", summary="Get a broadcast and its runs", responses={404: {"model": ErrorBody}})
def get_broadcast(session: ReadSessionDep, broadcast_id: str) -> BroadcastOut:
    return service.get_broadcast(session, broadcast_id)
