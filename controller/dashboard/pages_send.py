"""`/send`: forms that send a login, upload or chat task to an account (on its device, or a
device named), and a broadcast to a group or every device; `/broadcasts/{id}` shows one.

Each form posts to its own route, which turns the fields into the REST API's request model
(`controller.dashboard.forms`) and calls the same service the API calls. A field that cannot be
accepted is shown again next to its input, in the user's language (422); an accepted one
redirects to the new task's (or broadcast's) page. Every form carries a one-time `form_id`, used
as an idempotency key: a form sent twice (a double click, a reload) creates one task.

The upload form is multipart: its text fields come first and are checked before any file byte is
stored; the video and cover then stream into the file store (`controller.dashboard.upload`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, write_turn
from controller.api.idempotent import prune_if_due, ttl
from controller.dashboard import forms
from controller.dashboard.i18n import language_of
from controller.dashboard.render import render
from controller.dashboard.session import Operator, Viewer
from controller.services import accounts, devices, idempotency, task_create
from controller.services import broadcasts as broadcast_service
from controller.services.errors import NotFoundError, ServiceError
from controller.services.publisher import Publisher
from schemas.api import AccountOut, TaskCreate
from schemas.common import new_id

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

KINDS = ("login", "upload", "chat", "broadcast")
DEVICE_CHOICES = 1000  # devices listed in the forms' pickers (any id can be typed)


def choices(session: Session) -> dict[str, Any]:
    """The accounts and devices the forms offer."""
    listed, _total = devices.list_devices(session, limit=DEVICE_CHOICES)
    return {
        "accounts": [AccountOut.model_validate(a) for a in accounts.list_accounts(session)],
        "devices": [d.id for d in listed],
        "groups": sorted({g for d in listed for g in (d.groups or [])}),
        "broadcast_types": [(t, t) for t in forms.BROADCAST_TYPES],
        "login_methods": forms.LOGIN_METHODS,
    }


def send_page(request: Request, session: Session, kind: str | None = None, values: Mapping[str, str] | None = None,
              errors: Mapping[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    """The send page; after a refused post, `kind`'s form shows `values` and `errors` again."""
    chosen = dict(request.query_params) if values is None else dict(values)
    context = {
        **choices(session), "kind": kind or request.query_params.get("kind") or "login",
        "values": chosen, "errors": dict(errors or {}), "form_ids": {k: new_id() for k in KINDS}, "kinds": KINDS,
    }
    if kind is not None and values is not None:
        context["form_ids"][kind] = values.get("form_id") or new_id()  # the same form again: the same key
    return render(request, "send.html", context, status_code)


def refused(request: Request, kind: str, form: Mapping[str, str], errors: Mapping[str, str]) -> HTMLResponse:
    with request.app.state.read_sessions() as session:
        return send_page(request, session, kind, form, errors, 422)


def go(request: Request, path: str) -> Response:
    """After an accepted post: htmx follows HX-Location, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": path})
    return RedirectResponse(path, status_code=303)


def account_platform(session: Session, form: Mapping[str, str], _: forms.Translate) -> str | None:
    """The platform of the form's account (the default of its platform field); FormInvalid
    when the form names an account or a device that does not exist."""
    errors: dict[str, str] = {}
    platform = None
    name = (form.get("account") or "").strip()
    if name:
        try:
            platform = accounts.get_account(session, name).platform
        except NotFoundError:
            errors["account"] = _("No account has this name: add it on the Accounts page first.")
    device_id = (form.get("device_id") or "").strip()
    if device_id:
        try:
            devices.get_device(session, device_id)
        except NotFoundError:
            errors["device_id"] = _("No device has this id.")
    if errors:
        raise forms.FormInvalid(errors)
    return platform


def service_problem(exc: ServiceError, _: forms.Translate) -> dict[str, str]:
    """A service's refusal, shown above the form (its text is the API's, in English)."""
    return {forms.FORM: _("The controller refused it: %(reason)s") % {"reason": exc.detail}}


def checked(session: Session, form: Mapping[str, str], build: Callable[[Mapping[str, str], str | None, forms.Translate], T],
            _: forms.Translate) -> T:
    """The form's task, or FormInvalid with every problem found: an unknown account or device,
    and each field in the wrong form (not the platform an unknown account left empty)."""
    try:
        platform, unknown = account_platform(session, form, _), {}
    except forms.FormInvalid as exc:
        platform, unknown = None, exc.errors
    try:
        body = build(form, platform, _)
    except forms.FormInvalid as exc:
        problems = dict(exc.errors)
        if "account" in unknown and not (form.get("platform") or "").strip():
            problems.pop("platform", None)
        raise forms.FormInvalid({**problems, **unknown}) from None
    if unknown:
        raise forms.FormInvalid(unknown)
    return body


def create_task(request: Request, session: Session, publisher: Publisher, form: Mapping[str, str],
                build: Callable[[Mapping[str, str], str | None, forms.Translate], TaskCreate], kind: str) -> str:
    """Check the form, create its task (once per form_id); the new task's id, or FormInvalid."""
    _ = forms.translator(language_of(request))
    with write_turn(request, session):
        body = checked(session, form, build, _)
        claim = idempotency.claim(f"dashboard /send/{kind}", form.get("form_id") or None, body)
        try:
            answer = task_create.create_task_once(session, body, publisher, claim, ttl(request))
        except ServiceError as exc:
            raise forms.FormInvalid(service_problem(exc, _)) from None
    prune_if_due(request)
    return str(answer.body["id"])


async def form_of(request: Request) -> dict[str, str]:
    """The posted fields (text only) of a urlencoded form."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.get("/send", response_class=HTMLResponse)
def send(request: Request, _token: Viewer, session: ReadSessionDep) -> HTMLResponse:
    return send_page(request, session)


async def _task_form(request: Request, session: Session, publisher: Publisher, kind: str,
                     build: Callable[[Mapping[str, str], str | None, forms.Translate], TaskCreate]) -> Response:
    form = await form_of(request)
    try:
        task_id = await run_in_threadpool(create_task, request, session, publisher, form, build, kind)
    except forms.FormInvalid as exc:
        return await run_in_threadpool(refused, request, kind, form, exc.errors)
    return go(request, f"/tasks/{task_id}")


@router.post("/send/login")
async def send_login(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep) -> Response:
    return await _task_form(request, session, publisher, "login", forms.login_task)


@router.post("/send/chat")
async def send_chat(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep) -> Response:
    return await _task_form(request, session, publisher, "chat", forms.chat_task)


def create_broadcast(request: Request, session: Session, publisher: Publisher, form: Mapping[str, str]) -> str:
    _ = forms.translator(language_of(request))
    body = forms.broadcast(form, _)
    claim = idempotency.claim("dashboard /send/broadcast", form.get("form_id") or None, body)
    with write_turn(request, session):
        try:
            answer = broadcast_service.create_broadcast_once(session, body, publisher, claim, ttl(request))
        except ServiceError as exc:
            raise forms.FormInvalid(service_problem(exc, _)) from None
    prune_if_due(request)
    return str(answer.body["id"])


@router.post("/send/broadcast")
async def send_broadcast(request: Request, _token: Operator, session: SessionDep, publisher: PublisherDep) -> Response:
    form = await form_of(request)
    try:
        broadcast_id = await run_in_threadpool(create_broadcast, request, session, publisher, form)
    except forms.FormInvalid as exc:
        return await run_in_threadpool(refused, request, "broadcast", form, exc.errors)
    return go(request, f"/broadcasts/{broadcast_id}")


@router.get("/broadcasts/{broadcast_id}", response_class=HTMLResponse)
def broadcast_page(request: Request, _token: Viewer, session: ReadSessionDep, broadcast_id: str) -> HTMLResponse:
    return render(request, "broadcast.html", {"broadcast": broadcast_service.get_broadcast(session, broadcast_id)})
