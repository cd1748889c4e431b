"""The QR login panel of a login task's page (`templates/task_extra_login.html`, which the task
page includes in its live part, so it follows the task's events as they stream in).

While the login waits for a scan, the panel shows the QR code the platform's page showed the
device (`GET /tasks/{id}/qr.png`, the PNG the device reported in the task's `details.qr_png`);
when it waits for the SMS code, a field sends the code (`POST /tasks/{id}/login-code`) through
the same service as `POST /api/v1/tasks/{id}/input`; the code is never stored or logged.
Both need an operate-scope sign-in: scanning the code or typing one changes an account.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, write_turn
from controller.dashboard import forms
from controller.dashboard.i18n import language_of
from controller.dashboard.pages_send import form_of, go
from controller.dashboard.session import Operator, Viewer
from controller.services import task_control, tokens
from controller.services import tasks as task_service
from controller.services.errors import ServiceError
from controller.services.publisher import Publisher
from schemas.api import TaskInput

router = APIRouter(include_in_schema=False)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CODE_MAX = 32


@router.get("/tasks/{task_id}/qr.png")
def qr_image(request: Request, token: Viewer, session: ReadSessionDep, task_id: str) -> Response:
    """The QR code a login task waits to have scanned, as the device saw it."""
    if not tokens.allows(token.scope, "operate"):
        raise HTTPException(403, f"token {token.id!r} has scope {token.scope!r}; the QR code needs 'operate' or more")
    details = task_service.get_task(session, task_id).details or {}
    encoded = details.get("qr_png") if details.get("waiting_for") == "scan" else None
    try:
        picture = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        picture = b""
    if not picture.startswith(PNG_MAGIC):
        raise HTTPException(404, f"task {task_id!r} is not waiting for a QR code to be scanned")
    return Response(picture, media_type="image/png", headers={"Cache-Control": "no-store"})


def _send_code(request: Request, session: Session, publisher: Publisher, task_id: str, code: str) -> None:
    with write_turn(request, session):
        task_control.send_input(session, task_id, TaskInput(name="code", value=code), publisher)


def _answer(request: Request, task_id: str, message: str, ok: bool) -> Response:
    if not request.headers.get("hx-request"):
        if ok:
            return go(request, f"/tasks/{task_id}")
        raise HTTPException(422, message)
    css = "notice" if ok else "field-error"
    return HTMLResponse(f'<span class="{css}" role="status">{_escape(message)}</span>')


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@router.post("/tasks/{task_id}/login-code")
async def login_code(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep,
                     task_id: str) -> Response:
    """Send the SMS code to the device's login; htmx gets a one-line answer for the panel."""
    _ = forms.translator(language_of(request))
    code = (await form_of(request)).get("code", "").strip()
    if not code:
        return _answer(request, task_id, _("Type the code the phone received."), False)
    if len(code) > CODE_MAX or any(c.isspace() for c in code):
        return _answer(request, task_id, _("This does not look like an SMS code."), False)
    try:
        await run_in_threadpool(_send_code, request, session, publisher, task_id, code)
    except ServiceError as exc:
        if exc.status_code == 404:
            raise
        return _answer(request, task_id, _("The code was not sent: %(reason)s") % {"reason": exc.detail}, False)
    return _answer(request, task_id, _("Code sent; waiting for the site to accept it."), True)
