"""`/api/v1/files`: upload a video or cover once; devices download it (with resume)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from config.settings import FleetSettings
from controller.api.deps import ReadSessionDep, SessionDep, SettingsDep
from controller.api.security import Operate
from controller.models import StoredFile
from controller.services import files as service
from schemas.api import ErrorBody, FileOut

router = APIRouter(prefix="/files", tags=["files"])
# Downloads by devices: authorised by the URL's signature instead of an API token.
download_router = APIRouter(prefix="/files", tags=["files"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


def _key(settings: FleetSettings) -> bytes:
    configured = settings.file_url_key.get_secret_value() if settings.file_url_key else None
    return service.url_key(configured, settings.data_dir)


def _out(stored: StoredFile, settings: FleetSettings) -> FileOut:
    return FileOut(
        id=stored.id, name=stored.name, size=stored.size, sha256=stored.sha256, content_type=stored.content_type,
        created_at=stored.created_at, url=service.signed_url(settings.public_base_url, _key(settings), stored.id),
    )


def _send(settings: FleetSettings, stored: StoredFile) -> FileResponse:
    return FileResponse(settings.data_dir / "files" / stored.id, media_type=stored.content_type, filename=stored.name)


@router.post(
    "",
    dependencies=[Operate],
    status_code=201,
    summary="Upload a file (the request body is the file)",
    responses={413: {"model": ErrorBody, "description": "larger than FLEET_MAX_UPLOAD_BYTES"}},
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def upload_file(
    request: Request,
    settings: SettingsDep,
    name: Annotated[str, Query(min_length=1, max_length=255, description="file name, e.g. clip.mp4")],
) -> FileOut:
    """Streamed to disk while its sha256 is computed. Put the answer's `url`, `size` and `sha256`
    into an upload task's params."""
    saved = await service.save_stream(request.stream(), settings.data_dir / "files", settings.max_upload_bytes)
    content_type = request.headers.get("content-type") or "application/octet-stream"

    def record() -> StoredFile:
        with request.app.state.sessions() as session:
            return service.record(session, saved, name, content_type[:200])

    return _out(await run_in_threadpool(record), settings)


@router.get("", summary="List files")
def list_files(session: ReadSessionDep, settings: SettingsDep) -> list[FileOut]:
    return [_out(f, settings) for f in service.list_files(session)]


@router.get("/{file_id}", summary="Download a file (HTTP range requests supported)", responses=NOT_FOUND,
            response_class=FileResponse)
def download_file(session: ReadSessionDep, settings: SettingsDep, file_id: str) -> FileResponse:
    return _send(settings, service.get_file(session, file_id))


@download_router.get(
    "/{file_id}/download",
    summary="Download a file with a signed link (what devices use; HTTP range requests supported)",
    responses={403: {"model": ErrorBody, "description": "expired or invalid signature"}, **NOT_FOUND},
    response_class=FileResponse,
)
def download_signed(
    session: ReadSessionDep, settings: SettingsDep, file_id: str,
    expires: Annotated[int, Query(ge=0, le=2**40)], signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> FileResponse:
    service.check_signature(_key(settings), file_id, expires, signature)
    return _send(settings, service.get_file(session, file_id))


@router.delete("/{file_id}", dependencies=[Operate], status_code=204, summary="Delete a file", responses=NOT_FOUND)
def delete_file(session: SessionDep, settings: SettingsDep, file_id: str) -> Response:
    service.delete_file(session, settings.data_dir / "files", file_id)
    return Response(status_code=204)
