"""Storing one uploaded file wherever FLEET_FILE_STORE says (the controller's disk or the shared
database) and recording its row: what `POST /api/v1/files` and the dashboard's upload form both
do with a stream of bytes. The bytes are never held in memory as a whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.models import StoredFile
from controller.services import file_store, files


async def store_upload(
    chunks: AsyncIterator[bytes], sessions: sessionmaker[Session], settings: FleetSettings, name: str, content_type: str
) -> StoredFile:
    """Stream `chunks` into the file store (hashing them on the way) and record the file; a file
    larger than FLEET_MAX_UPLOAD_BYTES raises `PayloadTooLargeError` and leaves nothing behind."""
    if settings.file_store == "database":
        saved = await file_store.save_stream(chunks, sessions, settings.max_upload_bytes)
    else:
        saved = await files.save_stream(chunks, settings.data_dir / "files", settings.max_upload_bytes)

    def record() -> StoredFile:
        with sessions() as session:
            if settings.file_store == "database":
                file_store.check_whole(session, saved)
            return files.record(session, saved, name, content_type[:200], settings.file_store)

    return await run_in_threadpool(record)
