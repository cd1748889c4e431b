"""The devices pages: a table that follows presence live, and one page per device (facts,
accounts, connectivity history, recent tasks)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from controller.api.deps import ReadSessionDep
from controller.dashboard.render import extra_templates, render
from controller.dashboard.session import Viewer
from controller.services import accounts as account_service
from controller.services import devices as device_service
from controller.services import fleet_config
from controller.services import targets as target_service
from controller.services import tasks as task_service
from controller.services.errors import InvalidRequestError
from schemas.api import AccountOut, ConnectionOut, DeviceOut, TaskOut
from schemas.targets import TAG_EXPRESSION_MAX

router = APIRouter(include_in_schema=False)

PAGE = 100
StatusFilter = Annotated[str, Query(max_length=20)]
Search = Annotated[str | None, Query(max_length=200)]
TagFilter = Annotated[str | None, Query(max_length=TAG_EXPRESSION_MAX)]
Offset = Annotated[int, Query(ge=0, le=2**31)]


def _presence(value: str) -> Literal["online", "offline"] | None:
    if value in ("online", "offline"):
        return value  # type: ignore[return-value]
    if value:
        raise InvalidRequestError(f"status {value!r} is not a device status; use online or offline")
    return None


def _rows(session: Session, status: str, q: str | None, tags: str | None, offset: int) -> dict[str, Any]:
    expression = target_service.expression(tags) if tags else None
    items, total = device_service.list_devices(
        session, status=_presence(status), q=q or None, tags=expression, limit=PAGE, offset=offset
    )
    by_device: dict[str, list[str]] = defaultdict(list)
    for account in account_service.list_accounts(session):
        by_device[account.device_id].append(account.name)
    return {
        "devices": [DeviceOut.model_validate(d) for d in items],
        "accounts": by_device,
        "total": total,
        "offset": offset,
        "page": PAGE,
        "status": status or "",
        "q": q or "",
        "tags": tags or "",
    }


@router.get("/devices", response_class=HTMLResponse)
def devices_page(
    request: Request, _token: Viewer, session: ReadSessionDep,
    status: StatusFilter = "", q: Search = None, tags: TagFilter = None, offset: Offset = 0,
) -> HTMLResponse:
    return render(request, "devices.html", _rows(session, status, q, tags, offset))


@router.get("/devices/rows", response_class=HTMLResponse)
def device_rows(
    request: Request, _token: Viewer, session: ReadSessionDep,
    status: StatusFilter = "", q: Search = None, tags: TagFilter = None, offset: Offset = 0,
) -> HTMLResponse:
    """The table body alone, fetched again by htmx when a presence event arrives."""
    return render(request, "_device_rows.html", _rows(session, status, q, tags, offset))


def _device(session: Session, device_id: str) -> dict[str, Any]:
    device = DeviceOut.model_validate(device_service.get_device(session, device_id))
    connections = [ConnectionOut.model_validate(c) for c in device_service.connections(session, device_id, limit=50)]
    accounts = [AccountOut.model_validate(a) for a in account_service.list_accounts(session, device_id=device_id)]
    tasks, task_total = task_service.list_tasks(session, device_id=device_id, limit=20)
    return {"device": device, "connections": connections, "accounts": accounts,
            "tasks": [TaskOut.model_validate(t) for t in tasks], "task_total": task_total,
            "config": fleet_config.view(session, device_id), "device_panels": extra_templates("device_extra_")}


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_page(request: Request, _token: Viewer, session: ReadSessionDep, device_id: str) -> HTMLResponse:
    return render(request, "device.html", _device(session, device_id))


@router.get("/devices/{device_id}/live", response_class=HTMLResponse)
def device_live(request: Request, _token: Viewer, session: ReadSessionDep, device_id: str) -> HTMLResponse:
    """The live part of a device page (presence, load, history, recent tasks)."""
    return render(request, "_device_live.html", _device(session, device_id))
