"""Files kept in the SQL database (FLEET_FILE_STORE=database), so that every controller sharing
it can serve every file (docs/architecture.md#the-file-store).

An upload is cut into `CHUNK_BYTES` pieces as it streams in, each written in a short
transaction of its own (a slow client never holds SQLite's write lock, and no multi-GB file is
ever held in memory); its `files` row is committed last, once the pieces are all there, so a
file is either whole or not listed. A download reads the pieces its byte range covers, one at a
time. Pieces an upload left behind when its controller died are pruned after `ORPHAN_AFTER`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.models import FileChunk, StoredFile
from controller.services.errors import PayloadTooLargeError, ServiceError
from controller.services.files import SavedFile, too_large
from schemas.common import new_id, utcnow

CHUNK_BYTES = 1024 * 1024  # every piece but a file's last; readers rely on it: never change it for stored files
ORPHAN_AFTER = timedelta(days=1)


class RangeNotSatisfiableError(ServiceError):
    """A Range header that starts past the end of the file (416)."""

    status_code = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range starts past the end of the file ({size} bytes); ask for bytes=0-")
        self.size = size


def _write(sessions: sessionmaker[Session], file_id: str, seq: int, data: bytes) -> None:
    with sessions() as session:
        session.add(FileChunk(file_id=file_id, seq=seq, data=data, created_at=utcnow()))
        session.commit()


def _drop(sessions: sessionmaker[Session], file_id: str) -> None:
    with sessions() as session:
        session.execute(delete(FileChunk).where(FileChunk.file_id == file_id))
        session.commit()


async def save_stream(chunks: AsyncIterator[bytes], sessions: sessionmaker[Session], max_bytes: int) -> SavedFile:
    """Write an upload into `file_chunks` under a new id, hashing it on the way; its pieces are
    deleted again when it is too large or the client goes away."""
    file_id = new_id()
    digest, size, seq, buffer = hashlib.sha256(), 0, 0, bytearray()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            digest.update(chunk)
            buffer += chunk
            while len(buffer) >= CHUNK_BYTES:
                await run_in_threadpool(_write, sessions, file_id, seq, bytes(buffer[:CHUNK_BYTES]))
                del buffer[:CHUNK_BYTES]
                seq += 1
        if buffer:
            await run_in_threadpool(_write, sessions, file_id, seq, bytes(buffer))
    except BaseException:
        await run_in_threadpool(_drop, sessions, file_id)
        raise
    return SavedFile(file_id, size, digest.hexdigest())


def pieces(size: int) -> int:
    return -(-size // CHUNK_BYTES)


def check_whole(session: Session, saved: SavedFile) -> None:
    """Refuse to record an upload some of whose pieces are gone (pruned as orphans while it was
    still streaming in, after more than `ORPHAN_AFTER`)."""
    have = session.scalar(select(func.count()).select_from(FileChunk).where(FileChunk.file_id == saved.id))
    if have != pieces(saved.size):
        raise PayloadTooLargeError(f"the upload took longer than {ORPHAN_AFTER} and was pruned meanwhile; send it again")


def read_range(sessions: sessionmaker[Session], stored: StoredFile, start: int, end: int) -> Iterator[bytes]:
    """Bytes `start`…`end` (inclusive) of a stored file, one piece read at a time."""
    for seq in range(start // CHUNK_BYTES, end // CHUNK_BYTES + 1):
        with sessions() as session:
            data = session.scalar(select(FileChunk.data).where(FileChunk.file_id == stored.id, FileChunk.seq == seq))
        if data is None:  # deleted while it was being downloaded: the client sees a short body
            return
        offset = seq * CHUNK_BYTES
        yield data[max(start - offset, 0):end - offset + 1]


def prune_orphans(session: Session, now: datetime) -> int:
    """Delete the pieces of uploads that never got their `files` row (their controller died
    mid-upload) once they are older than `ORPHAN_AFTER`; how many went."""
    listed = select(StoredFile.id)
    result = session.execute(
        delete(FileChunk).where(FileChunk.created_at < now - ORPHAN_AFTER, FileChunk.file_id.not_in(listed))
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last, inclusive) a Range header asks for, or None for the
    whole file: no header, several ranges or one that cannot be read (RFC 9110 lets a server
    ignore those). A range that starts past the end is `RangeNotSatisfiableError`."""
    match = _RANGE.match((header or "").strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiableError(size)
        return (max(size - suffix, 0), size - 1) if size else None
    begin = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if begin >= size:
        raise RangeNotSatisfiableError(size)
    return None if end < begin else (begin, end)
