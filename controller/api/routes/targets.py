"""`/api/v1/targets`: what a target selects, before a job or placement uses it (a dry run)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controller.api.deps import ReadSessionDep
from controller.services import targets as service
from schemas.targets import Target, TargetPreview

router = APIRouter(prefix="/targets", tags=["targets"])


@router.post("/preview", summary="List the devices a target selects now (a dry run)")
def preview_target(
    session: ReadSessionDep,
    body: Target,
    limit: Annotated[int, Query(ge=1, le=10_000, description="device ids to list at most")] = 100,
) -> TargetPreview:
    """Nothing is created. Names that match nothing (unknown devices or accounts, tag keys no
    device has) are listed, to catch typos before a job goes out."""
    return service.preview(session, body, limit)
