"""`/api/v1/tasks`: create a task for one device, follow it, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, write_turn
from controller.api.idempotent import IdempotencyKeyHeader, prune_if_due, respond, ttl
from controller.api.security import Operate
from controller.services import idempotency, task_control, task_create, task_retry
from controller.services import tasks as service
from controller.services.publisher import Publisher
from schemas.api import (
    TASK_BATCH_LIMIT,
    ErrorBody,
    TaskBatchCreate,
    TaskBatchOut,
    TaskCreate,
    TaskDetail,
    TaskInput,
    TaskOut,
    TaskPage,
)
from schemas.events import TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.post(
    "",
    dependencies=[Operate],
    status_code=201,
    response_model=TaskOut,
    summary="Create a task for one device",
    responses={
        404: {"model": ErrorBody, "description": "unknown device"},
        409: {"model": ErrorBody, "description": "the id is already used by a task another request created"},
        422: {"description": "invalid task, or an Idempotency-Key already used with another body"},
    },
)
async def create_task(
    request: Request, session: SessionDep, publisher: PublisherDep, body: TaskCreate,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """The task is stored first, then published to `devices/<id>/tasks`. A device that is
    offline gets it when it comes back (unless it expired by then).

    Sent again with the same `Idempotency-Key` (or the same `id`) and the same body, it creates
    nothing new: the answer is the first one again, with `Idempotent-Replayed: true`."""
    # One worker-thread hop for the whole write: a sync route costs a second one, in which
    # FastAPI validates its answer.
    return await run_in_threadpool(_create_task, request, session, publisher, body, idempotency_key)


def _create_task(request: Request, session: Session, publisher: Publisher, body: TaskCreate, key: str | None) -> Response:
    claim = idempotency.claim("POST /api/v1/tasks", key, body)
    with write_turn(request, session):
        answer = task_create.create_task_once(session, body, publisher, claim, ttl(request))
    prune_if_due(request)
    return respond(answer)


@router.post(
    "/batch",
    dependencies=[Operate],
    status_code=201,
    response_model=TaskBatchOut,
    summary=f"Create up to {TASK_BATCH_LIMIT} tasks at once",
    responses={
        409: {"model": ErrorBody, "description": "an id is already used by a task another request created"},
        422: {"model": ErrorBody, "description": "invalid tasks, each named by its index (none was created), "
              "or an Idempotency-Key already used with another body"},
    },
)
def create_tasks(
    request: Request, session: SessionDep, publisher: PublisherDep, body: TaskBatchCreate,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Each task is checked as `POST /api/v1/tasks` checks it; then all are stored in one
    transaction and published, in order. If any is wrong (an unknown device or account, an
    unsupported type, invalid params, a message too large), none is created and the 422 names
    every wrong item as `tasks[<index>]`. Sent again with the same `Idempotency-Key` (or with
    an `id` in every item) and the same body, it creates nothing new and answers the first
    answer again; without either, sending it again creates new tasks."""
    claim = idempotency.claim("POST /api/v1/tasks/batch", idempotency_key, body)
    with write_turn(request, session):
        answer = task_create.create_tasks_once(session, body.tasks, publisher, claim, ttl(request))
    prune_if_due(request)
    return respond(answer)


@router.get("", summary="List tasks, newest first")
def list_tasks(
    session: ReadSessionDep,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    status: TaskStatus | None = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    broadcast_id: Annotated[str | None, Query(max_length=160)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> TaskPage:
    items, total = service.list_tasks(
        session, device_id=device_id, status=status, type=type, broadcast_id=broadcast_id, limit=limit, offset=offset
    )
    return TaskPage(items=[TaskOut.model_validate(t) for t in items], total=total, limit=limit, offset=offset)


@router.get("/{task_id}", summary="Get a task with its events", responses={404: {"model": ErrorBody}})
def get_task(session: ReadSessionDep, task_id: str) -> TaskDetail:
    return TaskDetail.model_validate(service.get_task(session, task_id))


@router.post(
    "/{task_id}/cancel",
    dependencies=[Operate],
    status_code=202,
    summary="Cancel a task",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody, "description": "the task already finished"}},
)
def cancel_task(session: SessionDep, publisher: PublisherDep, task_id: str) -> TaskOut:
    """A task that has not started is canceled at once; a running one is told to stop and
    reports `canceled` itself."""
    return TaskOut.model_validate(task_control.cancel_task(session, task_id, publisher))


@router.post(
    "/{task_id}/retry",
    dependencies=[Operate],
    status_code=201,
    summary="Run a finished task again, as a new task",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody, "description": "the task has not finished"}},
)
def retry_task(request: Request, session: SessionDep, publisher: PublisherDep, task_id: str) -> TaskOut:
    """A new task with the same type, params, device, account, timeout and retries as `task_id`
    (which must have ended: succeeded, failed, rejected, timed out, canceled or expired); the
    answer is the new task. An expiry is not copied."""
    with write_turn(request, session):
        return TaskOut.model_validate(task_retry.retry_task(session, task_id, publisher))


@router.post(
    "/{task_id}/input",
    dependencies=[Operate],
    status_code=202,
    summary="Send a running task the input it waits for (e.g. a login's SMS code)",
    responses={
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "the task is not running"},
        503: {"model": ErrorBody, "description": "the controller is not connected to the broker"},
    },
)
def send_input(session: SessionDep, publisher: PublisherDep, task_id: str, body: TaskInput) -> TaskOut:
    """The task's latest `details` say what it waits for (`{"waiting_for": "code"}`)."""
    return TaskOut.model_validate(task_control.send_input(session, task_id, body, publisher))
