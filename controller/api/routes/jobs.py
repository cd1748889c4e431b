"""`/api/v1/jobs`: one task over a target of devices, with a rollout, abort rules and a mode
(docs/architecture.md#jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, write_turn
from controller.api.idempotent import IdempotencyKeyHeader, prune_if_due, respond, ttl
from controller.api.security import Operate
from controller.services import idempotency
from controller.services import jobs as service
from schemas.api import ErrorBody, TaskOut, TaskPage
from schemas.events import TaskStatus
from schemas.jobs import JobCreate, JobOut, JobPage, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the job is not in a state that allows it"}
}


@router.post(
    "", dependencies=[Operate], status_code=201, response_model=JobOut, summary="Create a job",
    responses={422: {"description": "invalid task or target, or an Idempotency-Key already used with another body"}},
)
def create_job(
    request: Request, session: SessionDep, publisher: PublisherDep, body: JobCreate,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """The job is stored `scheduled`; the controller's rollout pass starts it (at `run_at`, or
    within a second) and creates its runs, tasks named `<job id>:<device id>`, as fast as the
    rollout allows. Sent again with the same `Idempotency-Key` and body, it creates nothing new."""
    claim = idempotency.claim("POST /api/v1/jobs", idempotency_key, body)
    with write_turn(request, session):
        answer = service.create_job_once(session, body, publisher, claim, ttl(request))
    prune_if_due(request)
    return respond(answer)


@router.get("", summary="List jobs, newest first")
def list_jobs(
    session: ReadSessionDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> JobPage:
    return service.list_jobs(session, status, limit, offset)


@router.get("/{job_id}", summary="Get a job and its progress", responses=NOT_FOUND)
def get_job(session: ReadSessionDep, job_id: str) -> JobOut:
    """Runs by status, pending targets, success rate, where the rollout stands, why it aborted."""
    return service.get_job(session, job_id)


@router.get("/{job_id}/runs", summary="List a job's runs", responses=NOT_FOUND)
def list_runs(
    session: ReadSessionDep, job_id: str, status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> TaskPage:
    items, total = service.list_runs(session, job_id, status, limit, offset)
    return TaskPage(items=[TaskOut.model_validate(t) for t in items], total=total, limit=limit, offset=offset)


@router.post("/{job_id}/cancel", dependencies=[Operate], summary="Cancel a job", responses={**NOT_FOUND, **CONFLICT})
def cancel_job(request: Request, session: SessionDep, publisher: PublisherDep, job_id: str) -> JobOut:
    """Stops the rollout and cancels the runs that have not started; running runs end on their own."""
    with write_turn(request, session):
        return service.cancel_job(session, job_id, publisher)


@router.post("/{job_id}/pause", dependencies=[Operate], summary="Pause a job's rollout",
             responses={**NOT_FOUND, **CONFLICT})
def pause_job(request: Request, session: SessionDep, job_id: str) -> JobOut:
    """No new runs until resumed; runs already created go on."""
    with write_turn(request, session):
        return service.pause_job(session, job_id)


@router.post("/{job_id}/resume", dependencies=[Operate], summary="Resume a paused job",
             responses={**NOT_FOUND, **CONFLICT})
def resume_job(request: Request, session: SessionDep, job_id: str) -> JobOut:
    with write_turn(request, session):
        return service.resume_job(session, job_id)
