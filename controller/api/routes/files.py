"""`/api/v1/files`: upload a video or cover once; devices download it (with resume), from this
controller's disk or, with FLEET_FILE_STORE=database, from the database every controller shares."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from config.settings import FleetSettings
from controller.api.deps import ReadSessionDep, SessionDep, SettingsDep
from controller.api.security import Operate
from controller.models import StoredFile
from controller.services import file_store, uploads
from controller.services import files as service
from controller.services.errors import NotFoundError
from schemas.api import ErrorBody, FileOut

router = APIRouter(prefix="/files", tags=["files"])
# Downloads by devices: authorised by the URL's signature instead of an API token.
download_router = APIRouter(prefix="/files", tags=["files"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


def _key(request: Request) -> bytes:
    key: bytes = request.app.state.file_url_key  # see controller.app: configured, shared or local
    return key


def _out(request: Request, stored: StoredFile, settings: FleetSettings) -> FileOut:
    return FileOut(
        id=stored.id, name=stored.name, size=stored.size, sha256=stored.sha256, content_type=stored.content_type,
        created_at=stored.created_at, url=service.signed_url(settings.public_base_url, _key(request), stored.id),
    )


def _disposition(name: str) -> str:
    quoted = quote(name)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != name else f'attachment; filename="{name}"'


def _send(request: Request, settings: FleetSettings, stored: StoredFile) -> Response:
    """The file, whole (200) or the one byte range asked for (206), from wherever it is kept."""
    if stored.store != "database":
        path = settings.data_dir / "files" / stored.id
        if not path.is_file():
            raise NotFoundError(
                f"file {stored.id!r} is kept on the disk of the controller it was uploaded to, not this one "
                "(FLEET_FILE_STORE=local); download it there, or run every controller with FLEET_FILE_STORE=database "
                "and upload it again"
            )
        return FileResponse(path, media_type=stored.content_type, filename=stored.name)
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{stored.sha256}"', "Content-Disposition": _disposition(stored.name)}
    try:
        wanted = file_store.byte_range(request.headers.get("range"), stored.size)
    except file_store.RangeNotSatisfiableError as exc:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{exc.size}"})
    first, last = wanted or (0, stored.size - 1)
    headers["Content-Length"] = str(max(last - first + 1, 0))
    if wanted is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{stored.size}"
    body = file_store.read_range(request.app.state.read_sessions, stored, first, last) if stored.size else iter(())
    return StreamingResponse(body, status_code=206 if wanted else 200, media_type=stored.content_type, headers=headers)


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
    """Streamed to disk (or the database) while its sha256 is computed. Put the answer's `url`,
    `size` and `sha256` into an upload task's params."""
    content_type = request.headers.get("content-type") or "application/octet-stream"
    stored = await uploads.store_upload(request.stream(), request.app.state.sessions, settings, name, content_type)
    return _out(request, stored, settings)


@router.get("", summary="List files")
def list_files(request: Request, session: ReadSessionDep, settings: SettingsDep) -> list[FileOut]:
    return [_out(request, f, settings) for f in service.list_files(session)]


@router.get("/{file_id}", summary="Download a file (HTTP range requests supported)", responses=NOT_FOUND,
            response_class=FileResponse)
def download_file(request: Request, session: ReadSessionDep, settings: SettingsDep, file_id: str) -> Response:
    return _send(request, settings, service.get_file(session, file_id))


@download_router.get(
    "/{file_id}/download",
    summary="Download a file with a signed link (what devices use; HTTP range requests supported)",
    responses={403: {"model": ErrorBody, "description": "expired or invalid signature"}, **NOT_FOUND},
    response_class=FileResponse,
)
def download_signed(
    request: Request, session: ReadSessionDep, settings: SettingsDep, file_id: str,
    expires: Annotated[int, Query(ge=0, le=2**40)], signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    service.check_signature(_key(request), file_id, expires, signature)
    return _send(request, settings, service.get_file(session, file_id))


@router.delete("/{file_id}", dependencies=[Operate], status_code=204, summary="Delete a file", responses=NOT_FOUND)
def delete_file(session: SessionDep, settings: SettingsDep, file_id: str) -> Response:
    service.delete_file(session, settings.data_dir / "files", file_id)
    return Response(status_code=204)
