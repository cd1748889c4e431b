"""Account session backups and moves (docs/architecture.md#the-session-vault):
`POST /api/v1/accounts/{name}/backup`, `GET /api/v1/accounts/{name}/backup`,
`POST /api/v1/accounts/{name}/move`, and `PUT /api/v1/backups/{task_id}` where devices send the
sealed blob (authorised by the link's signature, not a token). Included before the accounts
router, whose `{name:path}` routes would otherwise take these paths."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from controller.api.deps import ReadSessionDep, SettingsDep
from controller.api.security import Operate
from controller.services import account_backups
from controller.services.account_move import VaultContext, move_account, request_backup
from schemas.api import ErrorBody, TaskOut
from schemas.vault import AccountBackupOut, AccountMove, AccountMoveOut

router = APIRouter(prefix="/accounts", tags=["accounts"])
upload_router = APIRouter(prefix="/backups", tags=["accounts"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown account or device"}}


def vault_context(request: Request) -> VaultContext:
    state = request.app.state
    return VaultContext(state.sessions, state.read_sessions, state.mqtt, state.settings, state.file_url_key,
                        state.api_write_gate)


@router.post("/{name}/backup", dependencies=[Operate], status_code=201, response_model=TaskOut, responses=NOT_FOUND,
             summary="Back up the account's browser session (a session_backup task on its device)")
async def take_backup(request: Request, name: str) -> TaskOut:
    """The device seals the session with its vault key (FLEET_VAULT_KEY_FILE) and sends it here;
    follow the task, then see the backup with GET."""
    vault = vault_context(request)
    task = await run_in_threadpool(vault.write, lambda s: request_backup(vault, s, name))
    return TaskOut.model_validate(task)


@router.get("/{name}/backup", summary="The account's latest session backup (metadata only)", responses=NOT_FOUND)
def get_backup(session: ReadSessionDep, name: str) -> AccountBackupOut:
    """Which device took it, when, its size and the vault key it needs. The controller cannot
    show what is inside: it does not have the key."""
    return AccountBackupOut.model_validate(account_backups.get_backup(session, name))


@router.post("/{name}/move", dependencies=[Operate], responses={**NOT_FOUND, 409: {"model": ErrorBody}},
             summary="Move an account to another device, with its login when a backup exists")
async def move(request: Request, name: str, body: AccountMove) -> AccountMoveOut:
    """A fresh backup on the old device when it is online (waiting at most `backup_wait` s),
    then the account is bound to the new device, which restores the latest backup
    (`restore_task_id`); its login status follows the restore. Without a backup the account
    needs a login on the new device (`message` says so)."""
    return await move_account(vault_context(request), name, body)


@upload_router.put(
    "/{task_id}", status_code=201, summary="Send a session backup (what devices use, with the task's signed link)",
    responses={403: {"model": ErrorBody, "description": "expired or invalid signature"}, 409: {"model": ErrorBody}},
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def receive_backup(
    request: Request, settings: SettingsDep, task_id: str,
    expires: Annotated[int, Query(ge=0, le=2**40)], signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> AccountBackupOut:
    backup = await account_backups.receive(request.app.state.sessions, settings, request.app.state.file_url_key,
                                           task_id, expires, signature, request.stream())
    return AccountBackupOut.model_validate(backup)
