"""Account session backups on the controller (docs/architecture.md#the-session-vault): asking an
account's device for one (`session_backup`), receiving the sealed blob it PUTs to a signed link,
and keeping the latest per account. The controller never has the vault key: it stores the
ciphertext and reads only its public header (which key it needs).

The upload link is signed like a file link (HMAC with the file-URL key) over the task id, so
only the device that got the task can send it; a backup from a device that no longer holds the
account (a late task on a PC the account moved away from) is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.models import Account, AccountBackup, Device, FileChunk, StoredFile, Task
from controller.services import files, task_create, uploads
from controller.services.accounts import get_account
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceError
from controller.services.publisher import Publisher
from schemas.api import TaskCreate
from schemas.common import new_id, utcnow
from schemas.events import TaskStatus
from schemas.vault import HEADER_BYTES, TAG_BYTES, VaultFormatError, read_header

log = logging.getLogger(__name__)

BACKUP_TYPE = "session_backup"
RESTORE_TYPE = "session_restore"
LINK_TTL = 3600  # seconds a backup upload link stays valid


def upload_link(base_url: str, key: bytes, task_id: str, ttl: int = LINK_TTL) -> str:
    expires = int(time.time()) + ttl
    signature = files.link_signature(key, f"backup:{task_id}", expires)
    return f"{base_url}/api/v1/backups/{task_id}?expires={expires}&signature={signature}"


def check_link(key: bytes, task_id: str, expires: int, signature: str) -> None:
    files.check_link(key, f"backup:{task_id}", expires, signature, link="backup", renew="take a new backup")


def create_backup_task(session: Session, name: str, publisher: Publisher, base_url: str, key: bytes) -> Task:
    """Create (and publish) a `session_backup` task on the account's device, with its signed link."""
    account = get_account(session, name)
    task_id = new_id()
    body = TaskCreate(id=task_id, device_id=account.device_id, account=name, type=BACKUP_TYPE, ttl=LINK_TTL,
                      params={"platform": account.platform, "upload_url": upload_link(base_url, key, task_id)})
    return task_create.create_task(session, body, publisher)


@dataclass(frozen=True)
class BackupAfterLogin:
    """A lease job (FLEET_SESSION_BACKUP_AFTER_LOGIN): back up each online account whose last
    login is newer than its latest backup, once per login (a failed attempt is not repeated
    until the next login, so a device without a vault key is not asked every sweep)."""

    publisher: Publisher
    base_url: str
    key: bytes
    limit: int = 50  # accounts per sweep

    def __call__(self, session: Session, _now: datetime) -> None:
        tried = select(Task.id).where(Task.account == Account.name, Task.type == BACKUP_TYPE,
                                      Task.created_at >= Account.last_login_at).exists()
        newer = select(AccountBackup.id).where(AccountBackup.account == Account.name,
                                               AccountBackup.taken_at >= Account.last_login_at).exists()
        due = list(session.scalars(
            select(Account.name).join(Device, Device.id == Account.device_id)
            .where(Account.login_status == "logged_in", Account.last_login_at.is_not(None), Device.status == "online",
                   ~tried, ~newer).order_by(Account.last_login_at).limit(self.limit)
        ))
        session.rollback()
        for name in due:
            try:
                task = create_backup_task(session, name, self.publisher, self.base_url, self.key)
                log.info("session backup of account %s after its login: task %s", name, task.id)
            except ServiceError as exc:
                session.rollback()
                log.warning("no session backup of account %s after its login: %s", name, exc)


def latest_backup(session: Session, name: str) -> AccountBackup | None:
    return session.scalars(
        select(AccountBackup).where(AccountBackup.account == name).order_by(AccountBackup.taken_at.desc()).limit(1)
    ).first()


def get_backup(session: Session, name: str) -> AccountBackup:
    get_account(session, name)
    backup = latest_backup(session, name)
    if backup is None:
        raise NotFoundError(f"account {name!r} has no session backup yet; take one with POST /api/v1/accounts/{name}/backup "
                            "(its device needs FLEET_VAULT_KEY_FILE)")
    return backup


def _uploading_task(session: Session, task_id: str) -> Task:
    """The backup task a PUT belongs to, while its account still lives on the task's device."""
    task = session.get(Task, task_id)
    if task is None or task.type != BACKUP_TYPE or task.account is None:
        raise NotFoundError(f"there is no session_backup task {task_id!r}")
    if TaskStatus(task.status).is_final:
        raise ConflictError(f"task {task_id!r} is already {task.status}; take a new backup")
    account = session.get(Account, task.account)
    if account is None or account.device_id != task.device_id:
        raise ConflictError(f"account {task.account!r} is no longer on device {task.device_id!r}; its backup from there "
                            "is refused")
    return task


@dataclass
class _HeaderTap:
    """Passes an upload through while keeping its first bytes (the blob's public header)."""

    chunks: AsyncIterator[bytes]
    head: bytearray = field(default_factory=bytearray)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            if len(self.head) < HEADER_BYTES:
                self.head += chunk[:HEADER_BYTES - len(self.head)]
            yield chunk


async def receive(sessions: sessionmaker[Session], settings: FleetSettings, key: bytes, task_id: str,
                  expires: int, signature: str, chunks: AsyncIterator[bytes]) -> AccountBackup:
    """Store the blob a device PUTs for backup task `task_id` and make it the account's latest."""
    check_link(key, task_id, expires, signature)

    def task_facts() -> tuple[str, str, str]:
        with sessions() as session:
            task = _uploading_task(session, task_id)
            return str(task.account), task.device_id, str(task.params.get("platform", ""))

    account, device_id, platform = await run_in_threadpool(task_facts)
    tap = _HeaderTap(chunks)
    stored = await uploads.store_upload(tap.__aiter__(), sessions, settings, f"session-{task_id}.fleetvault",
                                        "application/octet-stream")
    try:
        whole = stored.size >= HEADER_BYTES + TAG_BYTES
        header = read_header(bytes(tap.head) + (b"\0" * TAG_BYTES if whole else b""))  # the header alone is read
    except VaultFormatError as exc:
        await run_in_threadpool(_drop_files, sessions, settings, [stored.id])
        raise InvalidRequestError(f"the backup was refused: {exc}") from None

    def record() -> AccountBackup:
        with sessions() as session:
            _uploading_task(session, task_id)  # still so once the bytes are in
            backup = AccountBackup(id=new_id(), account=account, platform=platform, file_id=stored.id, size=stored.size,
                                   sha256=stored.sha256, key_fingerprint=header.key_fingerprint, device_id=device_id,
                                   task_id=task_id, taken_at=utcnow())
            old = list(session.scalars(select(AccountBackup).where(AccountBackup.account == account)))
            session.add(backup)
            session.commit()
            session.refresh(backup)
            session.expunge(backup)
            log.info("session backup of account %s from device %s stored (%d bytes, vault key %s)",
                     account, device_id, stored.size, header.key_fingerprint)
        _drop_backups(sessions, settings, old)
        return backup

    try:
        return await run_in_threadpool(record)
    except ConflictError:
        await run_in_threadpool(_drop_files, sessions, settings, [stored.id])
        raise


def _drop_backups(sessions: sessionmaker[Session], settings: FleetSettings, old: list[AccountBackup]) -> None:
    """Forget superseded backups: their rows and their files."""
    if not old:
        return
    with sessions() as session:
        session.execute(delete(AccountBackup).where(AccountBackup.id.in_([b.id for b in old])))
        session.commit()
    _drop_files(sessions, settings, [b.file_id for b in old])


def _drop_files(sessions: sessionmaker[Session], settings: FleetSettings, file_ids: list[str]) -> None:
    for file_id in file_ids:
        with sessions() as session:
            try:
                files.delete_file(session, settings.data_dir / "files", file_id)
            except NotFoundError:
                pass


def forget(session: Session, names: list[str], files_dir: Path) -> list[Path]:
    """Delete the backups of accounts `names` with their stored files, in the caller's
    transaction (an account or device being deleted); the local files to unlink once it commits."""
    backups = list(session.scalars(select(AccountBackup).where(AccountBackup.account.in_(names)))) if names else []
    local: list[Path] = []
    for backup in backups:
        stored = session.get(StoredFile, backup.file_id)
        if stored is not None:
            if stored.store == "database":
                session.execute(delete(FileChunk).where(FileChunk.file_id == stored.id))
            else:
                local.append(files_dir / stored.id)
            session.delete(stored)
        session.delete(backup)
    return local


def unlink(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
