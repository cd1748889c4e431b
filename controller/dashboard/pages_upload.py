"""`POST /send/upload`: the upload form, with the video and cover chosen in the browser.

The body is read part by part as it arrives (`multipart_stream`): the CSRF value (the
`X-CSRF-Token` header, or the form's first field) and the text fields are checked before any
file byte is stored, then each file streams into the file store as `POST /api/v1/files` stores
one (`services.uploads`), never held in memory. The upload task then gets the files' signed
links, sizes and hashes, as a task made through the API would. A refused form deletes the files
it already stored and is shown again with the reasons next to its fields.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from controller.api.deps import PublisherDep, SessionDep, SettingsDep
from controller.dashboard import forms
from controller.dashboard.i18n import language_of
from controller.dashboard.multipart_stream import FieldPart, FilePart, MultipartError, StreamingForm, drain
from controller.dashboard.pages_send import checked, create_task, go, refused
from controller.dashboard.session import CSRF_FIELD, CSRF_HEADER, Viewer, csrf_value
from controller.models import ApiToken, StoredFile
from controller.services import files, tokens, uploads
from controller.services.errors import PayloadTooLargeError, ServiceError

router = APIRouter(include_in_schema=False)

FILE_FIELDS = ("video", "cover")
CSRF_REFUSED = "the form's CSRF token is missing or stale: reload the page and try again"


async def may_upload(request: Request, token: Viewer) -> ApiToken:
    """An operate-scope sign-in; the CSRF value is checked while the body is read."""
    if not tokens.allows(token.scope, "operate"):
        raise HTTPException(403, f"token {token.id!r} has scope {token.scope!r}; this needs 'operate' or more")
    return token


Uploader = Annotated[ApiToken, Depends(may_upload)]


def _same(sent: str | None, expected: str) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(str(sent), expected)


def _check_fields(request: Request, form: dict[str, str]) -> dict[str, Any]:
    _ = forms.translator(language_of(request))
    with request.app.state.read_sessions() as session:
        return checked(session, form, forms.upload_fields, _)


def _forget(request: Request, settings: Any, stored: dict[str, StoredFile]) -> None:
    for item in stored.values():
        with request.app.state.sessions() as session:
            try:
                files.delete_file(session, settings.data_dir / "files", item.id)
            except ServiceError:
                pass


class _Reader:
    """The state of one upload form being read."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.csrf_ok = _same(request.headers.get(CSRF_HEADER), csrf_value(request))
        self.form: dict[str, str] = {}
        self.stored: dict[str, StoredFile] = {}
        self.errors: dict[str, str] = {}
        self.params: dict[str, Any] | None = None
        self._ = forms.translator(language_of(request))

    def field(self, part: FieldPart) -> None:
        if part.name == CSRF_FIELD:
            self.csrf_ok = self.csrf_ok or _same(part.value, csrf_value(self.request))
        else:
            self.form[part.name] = part.value

    async def file(self, part: FilePart, settings: Any) -> None:
        if not self.csrf_ok:
            raise HTTPException(403, CSRF_REFUSED)  # before a byte of it is stored
        if part.name not in FILE_FIELDS or not part.filename or part.name in self.stored or self.errors:
            await part.drain()
            return
        if self.params is None:  # the first file: the text fields are all in
            try:
                self.params = await run_in_threadpool(_check_fields, self.request, self.form)
            except forms.FormInvalid as exc:
                self.errors.update(exc.errors)
                await part.drain()
                return
        try:
            self.stored[part.name] = await uploads.store_upload(
                part.chunks(), self.request.app.state.sessions, settings, part.filename[:255], part.content_type)
        except PayloadTooLargeError:
            self.errors[part.name] = self._("The file is larger than this controller accepts (%(max)s bytes).") % {
                "max": f"{settings.max_upload_bytes:,}"}


async def _read(request: Request, reader: _Reader, settings: Any) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        reader.errors[forms.FORM] = reader._("Send the upload form from the Send page.")
        return
    form = StreamingForm(content_type, request.stream())
    try:
        async for part in form:
            if isinstance(part, FieldPart):
                reader.field(part)
            else:
                await reader.file(part, settings)
    except MultipartError:
        reader.errors[forms.FORM] = reader._("The form arrived incomplete or damaged; send it again.")
    finally:
        await drain(form)  # whatever was refused: answer once the browser has sent it all


def _task_params(request: Request, reader: _Reader) -> dict[str, Any]:
    key: bytes = request.app.state.file_url_key
    base = request.app.state.settings.public_base_url
    video = reader.stored["video"]
    params = {**(reader.params or {}), "video_url": files.signed_url(base, key, video.id), "size": video.size,
              "sha256": video.sha256}
    if "cover" in reader.stored:
        params["cover_url"] = files.signed_url(base, key, reader.stored["cover"].id)
    return params


@router.post("/send/upload")
async def send_upload(request: Request, _token: Uploader, session: SessionDep, publisher: PublisherDep,
                      settings: SettingsDep) -> Response:
    reader = _Reader(request)
    try:
        await _read(request, reader, settings)
    except BaseException:
        await run_in_threadpool(_forget, request, settings, reader.stored)
        raise
    if not reader.csrf_ok:
        await run_in_threadpool(_forget, request, settings, reader.stored)
        raise HTTPException(403, CSRF_REFUSED)
    if not reader.errors and "video" not in reader.stored:
        reader.errors["video"] = reader._("Choose the video file to upload.")
        if reader.params is None:
            try:
                await run_in_threadpool(_check_fields, request, reader.form)
            except forms.FormInvalid as exc:
                reader.errors.update(exc.errors)
    if not reader.errors:
        params = _task_params(request, reader)
        try:
            task_id = await run_in_threadpool(create_task, request, session, publisher, reader.form,
                                              lambda form, _platform, _: forms.upload_task(form, params, _), "upload")
        except forms.FormInvalid as exc:
            reader.errors.update(exc.errors)
        else:
            return go(request, f"/tasks/{task_id}")
    await run_in_threadpool(_forget, request, settings, reader.stored)
    return await run_in_threadpool(refused, request, "upload", reader.form, reader.errors)
