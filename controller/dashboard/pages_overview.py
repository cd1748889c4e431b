"""The overview page at `/`: devices online and offline, tasks by state, updated live.

Other parts of the dashboard add panels to it without editing this module: every template
named `overview_extra_*.html` is included below the counts, in name order (it may load its own
data with hx-get from a route of its own module)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from controller.api.deps import ReadSessionDep
from controller.dashboard.render import extra_templates, render
from controller.dashboard.session import Viewer
from controller.services import fleet_counts

router = APIRouter(include_in_schema=False)


def _counts(session: ReadSessionDep) -> dict[str, object]:
    return {"devices": fleet_counts.devices_by_status(session), "tasks": fleet_counts.tasks_by_status(session)}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, _token: Viewer, session: ReadSessionDep) -> HTMLResponse:
    return render(request, "overview.html", {**_counts(session), "extra_panels": extra_templates("overview_extra_")})


@router.get("/overview/counts", response_class=HTMLResponse)
def overview_counts(request: Request, _token: Viewer, session: ReadSessionDep) -> HTMLResponse:
    """The counts alone, fetched again by htmx when the stream says something changed."""
    return render(request, "_overview_counts.html", _counts(session))
