"""Files operators upload for devices to fetch (videos, covers): streamed to disk with their
sha256, served back with HTTP range requests so an interrupted download resumes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import StoredFile
from controller.services.errors import NotFoundError, ServiceError
from schemas.common import new_id, utcnow

log = logging.getLogger(__name__)


class PayloadTooLargeError(ServiceError):
    status_code = 413


@dataclass(frozen=True)
class SavedFile:
    id: str
    size: int
    sha256: str


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
                    raise PayloadTooLargeError(
                        f"the file is larger than {max_bytes} bytes (FLEET_MAX_UPLOAD_BYTES); send a smaller one"
                    )
                digest.update(chunk)
                file.write(chunk)
        part.replace(directory / file_id)
    finally:
        part.unlink(missing_ok=True)
    return SavedFile(file_id, size, digest.hexdigest())


def record(session: Session, saved: SavedFile, name: str, content_type: str) -> StoredFile:
    stored = StoredFile(id=saved.id, name=name, size=saved.size, sha256=saved.sha256, content_type=content_type,
                        created_at=utcnow())
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
    stored = get_file(session, file_id)
    (directory / stored.id).unlink(missing_ok=True)
    session.delete(stored)
    session.commit()
