"""`/api/v1/accounts`: social-media accounts, the device each is bound to, their login status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from controller.api.deps import ReadSessionDep, SessionDep
from controller.api.security import Operate
from controller.services import accounts as service
from schemas.api import AccountCreate, AccountOut, AccountUpdate, ErrorBody, LoginStatus

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
def update_account(session: SessionDep, name: str, body: AccountUpdate) -> AccountOut:
    return AccountOut.model_validate(service.update_account(session, name, body))


@router.delete("/{name:path}", dependencies=[Operate], status_code=204, summary="Forget an account", responses=NOT_FOUND)
def delete_account(session: SessionDep, name: str) -> Response:
    service.delete_account(session, name)
    return Response(status_code=204)
