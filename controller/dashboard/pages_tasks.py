"""The tasks pages: a filtered, paged list, and one page per task with its event timeline and
progress (live), and cancel and retry buttons for operate-scope tokens."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, write_turn
from controller.dashboard.render import extra_templates, render
from controller.dashboard.session import Operator, Viewer
from controller.services import task_control, task_retry
from controller.services import tasks as task_service
from controller.services.errors import InvalidRequestError
from controller.services.publisher import Publisher
from schemas.api import TaskDetail, TaskOut
from schemas.events import TaskStatus

router = APIRouter(include_in_schema=False)

PAGE = 50
Text = Annotated[str, Query(max_length=200)]
Offset = Annotated[int, Query(ge=0, le=2**31)]


def parse_time(value: str, name: str) -> datetime | None:
    """A time from a filter field ("2026-11-30T14:05", taken as UTC), or None when empty."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequestError(f"{name} {value!r} is not a time: use YYYY-MM-DDTHH:MM (UTC)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_status(value: str) -> TaskStatus | None:
    if not value:
        return None
    try:
        return TaskStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise InvalidRequestError(f"status {value!r} is not a task status; use one of {known}") from None


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(
    request: Request, _token: Viewer, session: ReadSessionDep,
    device_id: Text = "", account: Text = "", type: Text = "", status: Text = "",
    since: Text = "", until: Text = "", offset: Offset = 0,
) -> HTMLResponse:
    filters = {"device_id": device_id, "account": account, "type": type, "status": status, "since": since, "until": until}
    items, total = task_service.list_tasks(
        session, device_id=device_id or None, account=account or None, type=type or None,
        status=parse_status(status), created_after=parse_time(since, "since"),
        created_before=parse_time(until, "until"), limit=PAGE, offset=offset,
    )
    return render(request, "tasks.html", {
        "tasks": [TaskOut.model_validate(t) for t in items], "total": total, "offset": offset, "page": PAGE,
        "filters": filters, "statuses": [s.value for s in TaskStatus],
    })


def _task(session: Session, task_id: str) -> dict[str, Any]:
    task = TaskDetail.model_validate(task_service.get_task(session, task_id))
    final = TaskStatus(task.status).is_final and task.retry_at is None
    return {"task": task, "final": final, "task_panels": extra_templates("task_extra_")}


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, _token: Viewer, session: ReadSessionDep, task_id: str) -> HTMLResponse:
    return render(request, "task.html", _task(session, task_id))


@router.get("/tasks/{task_id}/live", response_class=HTMLResponse)
def task_live(request: Request, _token: Viewer, session: ReadSessionDep, task_id: str) -> HTMLResponse:
    """The live part of a task page: status, progress bar, buttons and timeline."""
    return render(request, "_task_live.html", _task(session, task_id))


def _cancel(request: Request, session: Session, publisher: Publisher, task_id: str) -> None:
    with write_turn(request, session):
        task_control.cancel_task(session, task_id, publisher)


def _retry(request: Request, session: Session, publisher: Publisher, task_id: str) -> str:
    with write_turn(request, session):
        return task_retry.retry_task(session, task_id, publisher).id


def _go(request: Request, path: str) -> Response:
    """After a POST: htmx follows HX-Location, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": path})
    return RedirectResponse(path, status_code=303)


@router.post("/tasks/{task_id}/cancel")
async def cancel(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep, task_id: str) -> Response:
    await run_in_threadpool(_cancel, request, session, publisher, task_id)
    return _go(request, f"/tasks/{task_id}")


@router.post("/tasks/{task_id}/retry")
async def retry(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep, task_id: str) -> Response:
    new_id = await run_in_threadpool(_retry, request, session, publisher, task_id)
    return _go(request, f"/tasks/{new_id}")
