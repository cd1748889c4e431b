"""Moving an account to another device with its login (docs/architecture.md#the-session-vault).

`POST /api/v1/accounts/{name}/move` (and `fleet account move`, and a PATCH that changes the
device): when the old device is online, a fresh `session_backup` is taken there first, waited
for at most `backup_wait` seconds (a task still unfinished then is canceled, and a late upload
from it is refused anyway, since the account is no longer on that device); then the account is
bound to the new device and, when a backup exists, the new device gets a `session_restore` of
the latest one. The account's login status then follows the restore's outcome. Without a backup
the move is the old one: login status unknown, the account needs a login on the new device.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.models import Device, Task
from controller.services import account_backups, files, task_control, task_create
from controller.services.accounts import get_account
from controller.services.devices import device_not_found
from controller.services.errors import ConflictError, ServiceError
from controller.services.publisher import Publisher
from schemas.api import TaskCreate
from schemas.common import utcnow
from schemas.events import TaskStatus
from schemas.vault import AccountBackupOut, AccountMove, AccountMoveOut

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL = 0.2  # seconds between looks at the fresh backup task


@dataclass(frozen=True)
class VaultContext:
    """What backups and moves need from the running controller."""

    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    publisher: Publisher
    settings: FleetSettings
    url_key: bytes
    write_gate: threading.Lock

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a write session, in its turn among this process's REST writers."""
        with self.write_gate, self.sessions() as session:
            try:
                return work(session)
            finally:
                if session.in_transaction():
                    session.rollback()


def request_backup(vault: VaultContext, session: Session, name: str) -> Task:
    """Create (and publish) a `session_backup` task on the account's device."""
    return account_backups.create_backup_task(session, name, vault.publisher, vault.settings.public_base_url,
                                              vault.url_key)


async def _final_status(vault: VaultContext, task_id: str, wait: float) -> str | None:
    """The task's final status once it has one, or None after `wait` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait

    def status() -> str | None:
        with vault.read_sessions() as session:
            task = session.get(Task, task_id)
            return task.status if task is not None and TaskStatus(task.status).is_final else None

    while True:
        found = await run_in_threadpool(status)
        if found is not None or loop.time() >= deadline:
            return found
        await asyncio.sleep(POLL)


async def fresh_backup(vault: VaultContext, name: str, from_device: str, online: bool, wait: float) -> tuple[str, str | None]:
    """Best effort: a new backup on the old device. (outcome, task id)."""
    if wait <= 0:
        return "skipped", None
    if not online:
        return "offline", None
    task = await run_in_threadpool(vault.write, lambda s: request_backup(vault, s, name))
    status = await _final_status(vault, task.id, wait)
    if status is None:
        try:
            await run_in_threadpool(vault.write, lambda s: task_control.cancel_task(s, task.id, vault.publisher))
        except ServiceError:
            pass  # it ended meanwhile
        log.info("no fresh backup of account %s from device %s within %g s", name, from_device, wait)
        return "timed_out", task.id
    return ("taken" if status == TaskStatus.SUCCEEDED else status), task.id


def _start(session: Session, name: str, body: AccountMove) -> tuple[str, bool]:
    """Check the move; the old device and whether it is online."""
    account = get_account(session, name)
    target = session.get(Device, body.device_id)
    if target is None or target.deleted_at is not None:
        raise device_not_found(body.device_id)
    if account.device_id == body.device_id:
        raise ConflictError(f"account {name!r} is already on device {body.device_id!r}")
    old = session.get(Device, account.device_id)
    return account.device_id, old is not None and old.status == "online"


def rebind(vault: VaultContext, session: Session, name: str, to_device: str) -> tuple[AccountBackupOut | None, str | None, str]:
    """Bind the account to `to_device` and send it a restore of the latest backup (one commit)."""
    account = get_account(session, name)
    account.device_id, account.login_status, account.updated_at = to_device, "unknown", utcnow()
    backup = account_backups.latest_backup(session, name)
    if backup is None or backup.platform != account.platform:
        session.commit()
        return None, None, account.login_status
    params = {"platform": account.platform, "size": backup.size, "sha256": backup.sha256,
              "key_fingerprint": backup.key_fingerprint,
              "blob_url": files.signed_url(vault.settings.public_base_url, vault.url_key, backup.file_id)}
    out = AccountBackupOut.model_validate(backup)
    task = task_create.create_task(session, TaskCreate(device_id=to_device, account=name, type=account_backups.RESTORE_TYPE,
                                                       params=params), vault.publisher)
    return out, task.id, "unknown"


async def move_account(vault: VaultContext, name: str, body: AccountMove) -> AccountMoveOut:
    from_device, online = await run_in_threadpool(vault.write, lambda s: _start(s, name, body))
    fresh, fresh_id = await fresh_backup(vault, name, from_device, online, body.backup_wait)
    backup, restore_id, status = await run_in_threadpool(vault.write, lambda s: rebind(vault, s, name, body.device_id))
    if backup is None:
        message = (f"account {name!r} has no session backup: it is on {body.device_id!r} now and needs a login there "
                   "(give its devices FLEET_VAULT_KEY_FILE and take backups to move logins)")
    else:
        message = (f"account {name!r} is on {body.device_id!r} now; task {restore_id} restores its session from the "
                   f"backup taken {backup.taken_at.isoformat()} on {backup.device_id!r} (vault key {backup.key_fingerprint})")
    log.info("account %s moved from %s to %s (fresh backup: %s, restore task: %s)", name, from_device, body.device_id,
             fresh, restore_id)
    return AccountMoveOut(account=name, from_device=from_device, to_device=body.device_id, fresh_backup=fresh,
                          fresh_backup_task_id=fresh_id, backup=backup, restore_task_id=restore_id,
                          login_status=status, message=message)
