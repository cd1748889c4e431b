"""Accounts (seed 001's account table): each is bound to the device that holds its browser
profile, tasks may name just the account, and task outcomes keep its login status current."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import Account, Device, Task
from controller.services.devices import device_not_found
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError
from schemas.api import AccountCreate, AccountUpdate
from schemas.common import utcnow
from schemas.errors import WireErrorCode
from schemas.events import TaskStatus

log = logging.getLogger(__name__)

NOT_LOGGED_IN = WireErrorCode.NOT_LOGGED_IN


def account_not_found(name: str) -> NotFoundError:
    return NotFoundError(f"account {name!r} does not exist; create it with POST /api/v1/accounts")


def create_account(session: Session, body: AccountCreate) -> Account:
    if session.get(Device, body.device_id) is None:
        raise device_not_found(body.device_id)
    if session.get(Account, body.name) is not None:
        raise ConflictError(f"account {body.name!r} already exists; change it with PATCH /api/v1/accounts/{body.name}")
    now = utcnow()
    account = Account(name=body.name, platform=body.platform, device_id=body.device_id, login_status="unknown",
                      created_at=now, updated_at=now)
    session.add(account)
    session.commit()
    log.info("account %s (%s) bound to device %s", account.name, account.platform, account.device_id)
    return account


def get_account(session: Session, name: str) -> Account:
    account = session.get(Account, name)
    if account is None:
        raise account_not_found(name)
    return account


def list_accounts(
    session: Session, *, device_id: str | None = None, platform: str | None = None, login_status: str | None = None
) -> list[Account]:
    query = select(Account).order_by(Account.name)
    if device_id is not None:
        query = query.where(Account.device_id == device_id)
    if platform is not None:
        query = query.where(Account.platform == platform)
    if login_status is not None:
        query = query.where(Account.login_status == login_status)
    return list(session.scalars(query))


def update_account(session: Session, name: str, body: AccountUpdate) -> Account:
    """Change an account's platform, or its device without its login (the REST PATCH moves it
    with its login instead: controller/services/account_move.py)."""
    account = get_account(session, name)
    if body.device_id is not None and body.device_id != account.device_id:
        if session.get(Device, body.device_id) is None:
            raise device_not_found(body.device_id)
        account.device_id = body.device_id
        account.login_status = "unknown"  # the new device's profile has never logged it in
    if body.platform is not None:
        account.platform = body.platform
    account.updated_at = utcnow()
    session.commit()
    return account


def delete_account(session: Session, name: str) -> None:
    session.delete(get_account(session, name))
    session.commit()


def route(session: Session, device_id: str | None, account: str | None) -> str:
    """The device a new task goes to: the one given, else the account's."""
    if device_id is not None:
        return device_id
    assert account is not None  # TaskCreate demands one of them
    bound = session.get(Account, account)
    if bound is None:
        raise InvalidRequestError(
            f"account {account!r} is not bound to a device; give a device_id, or create the account with "
            "POST /api/v1/accounts"
        )
    return bound.device_id


OUTCOME_TYPES = frozenset({"login", "upload", "chat", "session_restore"})  # task types whose outcome says whether an account is logged in


def tracks_outcome(account: str | None, task_type: str) -> bool:
    """Whether a task of `task_type` for `account` may change the account's login status when it ends."""
    return account is not None and task_type in OUTCOME_TYPES


def apply_outcome(session: Session, task: Task) -> None:
    """Update the login status of the task's account from a finished browser task (in the
    caller's transaction). A successful login creates the account when it is not known yet."""
    if task.account is None or not tracks_outcome(task.account, task.type):
        return
    status, result, error = TaskStatus(task.status), task.result or {}, task.error or {}
    account = session.get(Account, task.account, with_for_update=True)
    new: str | None = None
    if task.type in ("login", "session_restore") and status == TaskStatus.SUCCEEDED:
        new = "logged_in" if result.get("logged_in") else _lost(account)
    elif status == TaskStatus.FAILED and error.get("code") == NOT_LOGGED_IN:
        new = _lost(account)
    if new is None:
        return
    now = utcnow()
    if account is None:
        if new != "logged_in":
            return
        account = Account(name=task.account, platform=str(task.params.get("platform", "unknown")),
                          device_id=task.device_id, created_at=now)
        session.add(account)
        log.info("account %s recorded from its first login on device %s", task.account, task.device_id)
    account.login_status = new
    account.status_task_id = task.id
    account.updated_at = now
    if new == "logged_in" and task.type == "login" and result.get("method") != "cookie_check":
        account.last_login_at = now
        account.display_name = result.get("account_name") or account.display_name
    log.info("account %s is %s (task %s)", account.name, new, task.id)


def _lost(account: Account | None) -> str:
    """A login that no longer holds: `expired` if it had held, else `logged_out`."""
    return "expired" if account is not None and account.login_status == "logged_in" else "logged_out"
