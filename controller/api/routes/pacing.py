"""`/api/v1/pacing`: the least interval between an account's tasks of a type (controller.services.pacing)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from controller.api.deps import ReadSessionDep, SessionDep
from controller.api.security import Operate
from controller.services import pacing as service
from schemas.api import ErrorBody
from schemas.common import TASK_TYPE_PATTERN
from schemas.schedules import PacingList, PacingRuleIn, PacingRuleOut

router = APIRouter(prefix="/pacing", tags=["pacing"])


@router.put("", dependencies=[Operate], summary="Set the pacing rule of an account and task type")
def set_rule(session: SessionDep, body: PacingRuleIn) -> PacingRuleOut:
    """Tasks of `type` for `account` (`*`: every account without a rule of its own) created from
    now on get a run_at at least `interval` (+ up to `jitter`, at random) seconds after the
    previous one's."""
    return service.set_rule(session, body)


@router.get("", summary="List pacing rules")
def list_rules(session: ReadSessionDep) -> PacingList:
    return service.list_rules(session)


@router.delete("", dependencies=[Operate], status_code=204, summary="Remove a pacing rule",
               responses={404: {"model": ErrorBody, "description": "no such rule"}})
def delete_rule(
    session: SessionDep,
    account: Annotated[str, Query(min_length=1, max_length=200)],
    type: Annotated[str, Query(pattern=TASK_TYPE_PATTERN)],
) -> Response:
    service.delete_rule(session, account, type)
    return Response(status_code=204)
