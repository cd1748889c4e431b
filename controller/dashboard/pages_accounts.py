"""`/accounts`: every account with its platform, device and login status; operate-scope tokens
also get forms to bind a new account to a device, move one to another device and forget one
(the services behind `/api/v1/accounts`). A refused form is shown again with the reason next
to its field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, get_args

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from controller.api.deps import ReadSessionDep, SessionDep, write_turn
from controller.api.routes.account_vault import vault_context
from controller.dashboard import forms
from controller.dashboard.i18n import language_of
from controller.dashboard.pages_send import form_of, go
from controller.dashboard.render import render
from controller.dashboard.session import Operator, Viewer
from controller.services import account_backups, account_move, accounts, devices
from controller.services.account_move import VaultContext
from controller.services.errors import ConflictError, NotFoundError, ServiceError
from schemas.api import AccountOut, LoginStatus

router = APIRouter(include_in_schema=False)

DEVICE_CHOICES = 1000


def accounts_page(request: Request, session: Session, form: str | None = None, values: Mapping[str, str] | None = None,
                  errors: Mapping[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    status = request.query_params.get("login_status") or None
    statuses = [str(s) for s in get_args(LoginStatus)]
    listed, _total = devices.list_devices(session, limit=DEVICE_CHOICES)
    items = accounts.list_accounts(session, login_status=status if status in statuses else None)
    return render(request, "accounts.html", {
        "accounts": [AccountOut.model_validate(a) for a in items], "devices": [d.id for d in listed],
        "login_statuses": statuses, "login_status": status or "",
        "form": form, "values": dict(values or {}), "errors": dict(errors or {}),
    }, status_code)


@router.get("/accounts", response_class=HTMLResponse)
def accounts_list(request: Request, _token: Viewer, session: ReadSessionDep) -> HTMLResponse:
    return accounts_page(request, session)


def _refused(request: Request, form: str, values: Mapping[str, str], errors: Mapping[str, str]) -> HTMLResponse:
    with request.app.state.read_sessions() as session:
        return accounts_page(request, session, form, values, errors, 422)


def _change(request: Request, session: Session, values: Mapping[str, str],
            act: Callable[[Session, Mapping[str, str], forms.Translate], Any]) -> None:
    _ = forms.translator(language_of(request))
    with write_turn(request, session):
        try:
            act(session, values, _)
        except ConflictError:
            raise forms.FormInvalid({"name": _("An account with this name exists already.")}) from None
        except ServiceError as exc:
            raise forms.FormInvalid({forms.FORM: _("The controller refused it: %(reason)s") % {"reason": exc.detail}}) from None


def _known(session: Session, _: forms.Translate, account: str | None = None, device_id: str | None = None) -> None:
    """FormInvalid naming the account or device that does not exist."""
    errors: dict[str, str] = {}
    if account is not None:
        try:
            accounts.get_account(session, account)
        except NotFoundError:
            errors["name"] = _("No account has this name.")
    if device_id is not None:
        try:
            devices.get_device(session, device_id)
        except NotFoundError:
            errors["device_id"] = _("No device has this id.")
    if errors:
        raise forms.FormInvalid(errors)


def _bind(session: Session, values: Mapping[str, str], _: forms.Translate) -> None:
    body = forms.account_create(values, _)
    _known(session, _, device_id=body.device_id)
    accounts.create_account(session, body)


def _move(vault: VaultContext, session: Session, values: Mapping[str, str], _: forms.Translate) -> None:
    """As the REST PATCH: the new device restores the latest session backup, if there is one."""
    body = forms.account_move(values, _)
    name = values.get("name", "")
    _known(session, _, account=name, device_id=body.device_id)
    if body.device_id is not None and body.device_id != accounts.get_account(session, name).device_id:
        account_move.rebind(vault, session, name, body.device_id)
    else:
        accounts.update_account(session, name, body)


def _forget(files_dir: Path, session: Session, values: Mapping[str, str], _: forms.Translate) -> None:
    _known(session, _, account=values.get("name", ""))
    backup_files = account_backups.forget(session, [values.get("name", "")], files_dir)
    accounts.delete_account(session, values.get("name", ""))
    account_backups.unlink(backup_files)


async def _post(request: Request, session: Session, form: str,
                act: Callable[[Session, Mapping[str, str], forms.Translate], Any]) -> Response:
    values = await form_of(request)
    try:
        await run_in_threadpool(_change, request, session, values, act)
    except forms.FormInvalid as exc:
        return await run_in_threadpool(_refused, request, form, values, exc.errors)
    return go(request, "/accounts")


@router.post("/accounts/bind")
async def bind(request: Request, _token: Operator, session: SessionDep) -> Response:
    return await _post(request, session, "bind", _bind)


@router.post("/accounts/move")
async def move(request: Request, _token: Operator, session: SessionDep) -> Response:
    return await _post(request, session, "move", partial(_move, vault_context(request)))


@router.post("/accounts/forget")
async def forget(request: Request, _token: Operator, session: SessionDep) -> Response:
    return await _post(request, session, "forget", partial(_forget, request.app.state.settings.data_dir / "files"))
