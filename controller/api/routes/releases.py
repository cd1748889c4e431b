"""`/api/v1/releases`: publish a signed release of the device daemon, read releases, and roll one
out to a target of devices as a job of `update` runs (docs/architecture.md#remote-update)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from controller.api.deps import PublisherDep, ReadSessionDep, SessionDep, SettingsDep, write_turn
from controller.api.idempotent import respond, ttl
from controller.api.security import Admin
from controller.services import releases as service
from schemas.api import ErrorBody
from schemas.jobs import JobOut
from schemas.release_api import ReleaseOut, ReleaseRollout
from schemas.releases import SIGNATURE_PATTERN, VERSION_PATTERN, WHEEL_NAME_PATTERN

router = APIRouter(prefix="/releases", tags=["releases"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


def _key(request: Request) -> bytes:
    key: bytes = request.app.state.file_url_key
    return key


@router.post(
    "",
    dependencies=[Admin],
    status_code=201,
    summary="Publish a signed release (the request body is the wheel)",
    responses={
        409: {"model": ErrorBody, "description": "the version exists, or no release public key is configured"},
        413: {"model": ErrorBody, "description": "larger than FLEET_MAX_UPLOAD_BYTES"},
        422: {"model": ErrorBody, "description": "the signature does not match the wheel, version and file name"},
    },
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def publish_release(
    request: Request,
    settings: SettingsDep,
    version: Annotated[str, Query(pattern=VERSION_PATTERN, description="the wheel's version, e.g. 0.2.0")],
    file_name: Annotated[str, Query(pattern=WHEEL_NAME_PATTERN, max_length=255, description="the wheel's file name")],
    signature: Annotated[str, Query(pattern=SIGNATURE_PATTERN, description="Ed25519 signature, `fleet release publish` makes it")],
) -> ReleaseOut:
    """The wheel is stored like any file while its sha256 is computed; the signature must hold
    over version, sha256 and file name under FLEET_UPDATE_PUBLIC_KEY, else nothing is kept."""
    release = await service.publish(request.stream(), request.app.state.sessions, settings, version, file_name, signature)
    return service.release_out(release)


@router.get("", summary="List releases, newest first")
def list_releases(session: ReadSessionDep) -> list[ReleaseOut]:
    return [service.release_out(release) for release in service.list_releases(session)]


@router.get("/{version}", summary="Get a release, with its `update` task params", responses=NOT_FOUND)
def get_release(request: Request, session: ReadSessionDep, settings: SettingsDep, version: str) -> ReleaseOut:
    """`params` are what an `update` task needs (a fresh signed download link included): send them
    in a task of type `update` to update one device by hand."""
    release = service.get_release(session, version)
    return service.release_out(release, service.update_params(release, settings.public_base_url, _key(request)))


@router.post(
    "/{version}/rollout", dependencies=[Admin], status_code=201, response_model=JobOut,
    summary="Update a target's devices to this release (a job of `update` runs)",
    responses={**NOT_FOUND, 422: {"model": ErrorBody, "description": "an invalid target or rollout"}},
)
def rollout_release(
    request: Request, session: SessionDep, settings: SettingsDep, publisher: PublisherDep, version: str,
    body: ReleaseRollout,
) -> Response:
    """Creates a job (see /api/v1/jobs) whose runs update each device of the target; its rollout
    rate and abort rules apply, so a bad release can stop after the first failures."""
    with write_turn(request, session):
        release = service.get_release(session, version)
        params = service.update_params(release, settings.public_base_url, _key(request), body.drain_timeout)
        answer = service.rollout(session, release, body, params, publisher, ttl(request))
    return respond(answer)
