"""`GET /api/v1/stats`: task statistics over a time window, computed by the database
(`controller.services.stats`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controller.api.deps import ReadSessionDep
from controller.services import stats as service
from schemas.common import UtcDatetime
from schemas.stats import StatsFilters, StatsOut, StatsWindow

router = APIRouter(prefix="/stats", tags=["stats"])

BAD_WINDOW: dict[int | str, dict[str, Any]] = {
    422: {"description": "a malformed time, 'since' not before 'until', or both 'window' and 'since'"},
}


@router.get("", summary="Task statistics over a time window", responses=BAD_WINDOW)
def get_stats(
    session: ReadSessionDep,
    window: Annotated[StatsWindow | None, Query(description="the last 1h, 24h or 7d (before `until`); "
                                                "default 24h unless `since` is given")] = None,
    since: Annotated[UtcDatetime | None, Query(description="ISO 8601; tasks created at or after it")] = None,
    until: Annotated[UtcDatetime | None, Query(description="ISO 8601; tasks created before it (default now)")] = None,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    account: Annotated[str | None, Query(max_length=200)] = None,
    platform: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[str | None, Query(max_length=64, description="task type")] = None,
) -> StatsOut:
    """Tasks created in the window: how many in each state and of each type, and per device,
    account, platform and type how many finished, the success rate (succeeded / finished) and
    the median run time of the succeeded ones. Times without a zone are UTC."""
    span = service.resolve_window(window, since, until)
    filters = StatsFilters(device_id=device_id, account=account, platform=platform, type=type)
    return service.compute(session, span, filters)


