"""`/api/v1/files`: upload a video or cover once; devices download it (with resume)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from controller.api.deps import SessionDep, SettingsDep
from controller.models import StoredFile
from controller.services import files as service
from schemas.api import ErrorBody, FileOut

router = APIRouter(prefix="/files", tags=["files"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


def _out(stored: StoredFile, base_url: str) -> FileOut:
    return FileOut(
        id=stored.id, name=stored.name, size=stored.size, sha256=stored.sha256, content_type=stored.content_type,
        created_at=stored.created_at, url=f"{base_url}/api/v1/files/{stored.id}",
    )


@router.post(
    "",
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

    return _out(await run_in_threadpool(record), settings.public_base_url)


@router.get("", summary="List files")
def list_files(session: SessionDep, settings: SettingsDep) -> list[FileOut]:
    return [_out(f, settings.public_base_url) for f in service.list_files(session)]


@router.get("/{file_id}", summary="Download a file (HTTP range requests supported)", responses=NOT_FOUND,
            response_class=FileResponse)
def download_file(session: SessionDep, settings: SettingsDep, file_id: str) -> FileResponse:
    stored = service.get_file(session, file_id)
    return FileResponse(settings.data_dir / "files" / stored.id, media_type=stored.content_type, filename=stored.name)


@router.delete("/{file_id}", status_code=204, summary="Delete a file", responses=NOT_FOUND)
def delete_file(session: SessionDep, settings: SettingsDep, file_id: str) -> Response:
    service.delete_file(session, settings.data_dir / "files", file_id)
    return Response(status_code=204)
