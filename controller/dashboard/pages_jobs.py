"""The jobs pages (docs/architecture.md#jobs): a paged list of jobs, and one page per job with its
progress (runs by status, pending targets, success rate, abort reason) and runs, refreshed as
its runs change (the push stream), with pause, resume and cancel buttons for operate-scope
tokens. Strings live in locales/*/jobs.po."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, write_turn
from controller.dashboard.render import render
from controller.dashboard.session import Operator, Viewer
from controller.services import jobs as job_service
from controller.services.errors import InvalidRequestError
from controller.services.publisher import Publisher
from schemas.api import TaskOut
from schemas.jobs import JOB_FINAL_STATUSES

router = APIRouter(include_in_schema=False)

PAGE = 50
RUNS_SHOWN = 200
STATUSES = ("scheduled", "running", "paused", *JOB_FINAL_STATUSES)
Offset = Annotated[int, Query(ge=0, le=2**31)]


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, _token: Viewer, session: ReadSessionDep,
              status: Annotated[str, Query(max_length=20)] = "", offset: Offset = 0) -> HTMLResponse:
    if status and status not in STATUSES:
        raise InvalidRequestError(f"status {status!r} is not a job status; use one of {', '.join(STATUSES)}")
    page = job_service.list_jobs(session, status or None, PAGE, offset)
    return render(request, "jobs.html", {"jobs": page.items, "total": page.total, "offset": offset, "page": PAGE,
                                         "status": status, "statuses": STATUSES})


def _job(session: Session, job_id: str) -> dict[str, Any]:
    job = job_service.get_job(session, job_id)
    runs, total = job_service.list_runs(session, job_id, None, RUNS_SHOWN, 0)
    return {"job": job, "tasks": [TaskOut.model_validate(run) for run in runs], "runs_total": total,
            "final": job.status in JOB_FINAL_STATUSES}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, _token: Viewer, session: ReadSessionDep, job_id: str) -> HTMLResponse:
    return render(request, "job.html", _job(session, job_id))


def _act(request: Request, session: Session, publisher: Publisher, job_id: str, action: str) -> None:
    with write_turn(request, session):
        if action == "cancel":
            job_service.cancel_job(session, job_id, publisher)
        elif action == "pause":
            job_service.pause_job(session, job_id)
        else:
            job_service.resume_job(session, job_id)


async def _do(request: Request, session: Session, publisher: Publisher, job_id: str, action: str) -> Response:
    await run_in_threadpool(_act, request, session, publisher, job_id, action)
    path = f"/jobs/{job_id}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": path})
    return RedirectResponse(path, status_code=303)


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep, job_id: str) -> Response:
    return await _do(request, session, publisher, job_id, "cancel")


@router.post("/jobs/{job_id}/pause")
async def pause(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep, job_id: str) -> Response:
    return await _do(request, session, publisher, job_id, "pause")


@router.post("/jobs/{job_id}/resume")
async def resume(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep, job_id: str) -> Response:
    return await _do(request, session, publisher, job_id, "resume")
