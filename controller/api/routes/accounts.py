"""`/api/v1/accounts`: social-media accounts, the device each is bound to, their login status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from controller.api.deps import ReadSessionDep, SessionDep, SettingsDep
from controller.api.routes.account_vault import vault_context
from controller.api.security import Operate
from controller.services import account_backups
from controller.services import accounts as service
from controller.services.account_move import move_account
from schemas.api import AccountCreate, AccountOut, AccountUpdate, ErrorBody, LoginStatus
from schemas.vault import AccountMove

router = APIRouter(prefix="/accounts", tags=["accounts"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown account or device"}}


@router.post("", dependencies=[Operate], status_code=201, summary="Bind an account to a device", responses={**NOT_FOUND, 409: {"model": ErrorBody}})
def create_account(session: SessionDep, body: AccountCreate) -> AccountOut:
    """Tasks may then name just the account; they go to its device."""
    return AccountOut.model_validate(service.create_account(session, body))


@router.get("", summary="List accounts")
def list_accounts(
    session: ReadSessionDep,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    platform: Annotated[str | None, Query(max_length=64)] = None,
    login_status: LoginStatus | None = None,
) -> list[AccountOut]:
    items = service.list_accounts(session, device_id=device_id, platform=platform, login_status=login_status)
    return [AccountOut.model_validate(a) for a in items]


@router.get("/{name:path}", summary="Get an account", responses=NOT_FOUND)
def get_account(session: ReadSessionDep, name: str) -> AccountOut:
    return AccountOut.model_validate(service.get_account(session, name))


@router.patch("/{name:path}", dependencies=[Operate], summary="Move an account to another device", responses=NOT_FOUND)
async def update_account(request: Request, name: str, body: AccountUpdate) -> AccountOut:
    """A new `device_id` moves the account as POST /api/v1/accounts/{name}/move does with
    `backup_wait` 0: the new device restores the latest session backup, if there is one."""
    vault = vault_context(request)
    if body.device_id is not None:
        current = await run_in_threadpool(vault.write, lambda s: service.get_account(s, name).device_id)
        if current != body.device_id:
            await move_account(vault, name, AccountMove(device_id=body.device_id, backup_wait=0))
            body = body.model_copy(update={"device_id": None})
    account = await run_in_threadpool(vault.write, lambda s: service.update_account(s, name, body))
    return AccountOut.model_validate(account)


@router.delete("/{name:path}", dependencies=[Operate], status_code=204, summary="Forget an account", responses=NOT_FOUND)
def delete_account(session: SessionDep, settings: SettingsDep, name: str) -> Response:
    """Its session backups go too."""
    backup_files = account_backups.forget(session, [name], settings.data_dir / "files")
    service.delete_account(session, name)
    account_backups.unlink(backup_files)
    return Response(status_code=204)
