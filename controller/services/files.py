"""Files operators upload for devices to fetch (videos, covers): streamed to disk (or, with
FLEET_FILE_STORE=database, into the database: `file_store`) with their sha256, served back
with HTTP range requests so an interrupted download resumes.

Devices have no API token, so the URL a task carries is signed: HMAC-SHA256 over the file id
and an expiry time, with a key only the controllers know: FLEET_FILE_URL_KEY; else, with the
database store, a random key kept in the database (the same for every controller that shares
it); else a random key kept in `<data dir>/file-url-key`."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.models import FileChunk, SharedSecret, StoredFile
from controller.services.errors import ConflictError, ForbiddenError, NotFoundError, PayloadTooLargeError
from schemas.common import new_id, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedFile:
    id: str
    size: int
    sha256: str


def too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the file is larger than {max_bytes} bytes (FLEET_MAX_UPLOAD_BYTES); send a smaller one")


async def save_stream(chunks: AsyncIterator[bytes], directory: Path, max_bytes: int) -> SavedFile:
    """Write an upload to `<directory>/<new id>`, hashing it on the way; nothing is left behind
    when it is too large or the client goes away."""
    directory.mkdir(parents=True, exist_ok=True)
    file_id = new_id()
    part = directory / f"{file_id}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with part.open("wb") as file:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(max_bytes)
                digest.update(chunk)
                file.write(chunk)
        part.replace(directory / file_id)
    finally:
        part.unlink(missing_ok=True)
    return SavedFile(file_id, size, digest.hexdigest())


URL_TTL = 7 * 86400  # seconds a signed download URL stays valid
KEY_FILE = "file-url-key"


def url_key(configured: str | None, data_dir: Path) -> bytes:
    """The signing key: the configured one, else one generated once and kept in the data dir."""
    if configured:
        return configured.encode()
    path = data_dir / KEY_FILE
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip().encode()


SHARED_KEY = "file-url-key"  # its name in `shared_secrets`


def shared_url_key(session: Session) -> bytes:
    """The signing key kept in the database, created by the first controller that asks for it
    (a concurrent first one loses the INSERT race and reads the winner's)."""
    row = session.get(SharedSecret, SHARED_KEY)
    if row is None:
        try:
            session.add(SharedSecret(name=SHARED_KEY, value=secrets.token_hex(32), created_at=utcnow()))
            session.commit()
        except IntegrityError:
            session.rollback()
        row = session.get(SharedSecret, SHARED_KEY)
        assert row is not None
    value = row.value
    session.rollback()
    return value.encode()


def link_signature(key: bytes, subject: str, expires: int) -> str:
    """The HMAC a signed link carries: what it opens (`subject`) until when (`expires`, epoch s)."""
    return hmac.new(key, f"{subject}:{expires}".encode(), hashlib.sha256).hexdigest()


def check_link(key: bytes, subject: str, expires: int, signature: str, *, link: str, renew: str) -> None:
    """Refuse an expired or forged signed link; `link` names it and `renew` says how to get a new one."""
    if expires < time.time():
        raise ForbiddenError(f"this {link} link has expired; {renew}")
    if not hmac.compare_digest(link_signature(key, subject, expires), signature):
        raise ForbiddenError(f"this {link} link's signature is not valid")


def signed_url(base_url: str, key: bytes, file_id: str, ttl: int = URL_TTL) -> str:
    expires = int(time.time()) + ttl
    return f"{base_url}/api/v1/files/{file_id}/download?expires={expires}&signature={link_signature(key, file_id, expires)}"


def check_signature(key: bytes, file_id: str, expires: int, signature: str) -> None:
    check_link(key, file_id, expires, signature, link="download", renew="ask the controller for the file's URL again")


def record(session: Session, saved: SavedFile, name: str, content_type: str, store: str = "local") -> StoredFile:
    stored = StoredFile(id=saved.id, name=name, size=saved.size, sha256=saved.sha256, content_type=content_type,
                        created_at=utcnow(), store=store)
    session.add(stored)
    session.commit()
    log.info("file %s stored (%d bytes)", stored.id, stored.size)
    return stored


def get_file(session: Session, file_id: str) -> StoredFile:
    stored = session.get(StoredFile, file_id)
    if stored is None:
        raise NotFoundError(f"file {file_id!r} does not exist; upload one with POST /api/v1/files")
    return stored


def list_files(session: Session) -> list[StoredFile]:
    return list(session.scalars(select(StoredFile).order_by(StoredFile.created_at.desc())))


def delete_file(session: Session, directory: Path, file_id: str) -> None:
    """Delete the file's row and its content, wherever it is kept (a database-kept file's
    pieces go in the same transaction)."""
    stored = get_file(session, file_id)
    from controller.services.releases import file_release  # releases build on files

    release = file_release(session, stored)
    if release is not None:
        raise ConflictError(f"file {file_id!r} is the wheel of release {release}; it is kept while the release exists")
    if stored.store == "database":
        session.execute(delete(FileChunk).where(FileChunk.file_id == stored.id))
    else:
        (directory / stored.id).unlink(missing_ok=True)
    session.delete(stored)
    session.commit()
