"""Releases of the device daemon (docs/architecture.md#remote-update): a wheel the operator
signed with the release key, published once, then installed by devices through `update` tasks.

Publishing streams the wheel into the file store (`uploads.store_upload`: disk or database,
hashed on the way), then checks the operator's signature over version, sha256 and file name
against FLEET_UPDATE_PUBLIC_KEY; a mismatch deletes the file again and is refused (422). The
controller never signs a release itself: it has no release private key, and devices check the
signature again, so it cannot make a device run code the operator did not sign.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.models import Release, StoredFile
from controller.services import files, jobs, uploads
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError
from controller.services.idempotency import Answer
from controller.services.publisher import Publisher
from schemas.jobs import JobCreate
from schemas.release_api import ReleaseOut, ReleaseRollout
from schemas.releases import UPDATE_TYPE, UpdateParams, signature_problem, wheel_version

log = logging.getLogger(__name__)


def check_publishable(session: Session, settings: FleetSettings, version: str, file_name: str) -> None:
    """Refuse a release before any byte is stored: no key configured, a taken version, a file
    name that is not a wheel of `version`."""
    try:
        key = settings.release_public_key()
    except ValueError as exc:
        raise ConflictError(str(exc)) from None
    if key is None:
        raise ConflictError("this controller has no release public key (FLEET_UPDATE_PUBLIC_KEY or "
                            "FLEET_UPDATE_PUBLIC_KEY_FILE): it cannot check a release's signature; set it and restart")
    if wheel_version(file_name) != version:
        raise InvalidRequestError(f"the file name {file_name!r} is not a wheel of version {version} "
                                  "(<name>-<version>-<python>-<abi>-<platform>.whl)")
    if session.get(Release, version) is not None:
        raise ConflictError(f"release {version} already exists; publish a new version")


async def publish(
    chunks: AsyncIterator[bytes], sessions: sessionmaker[Session], settings: FleetSettings,
    version: str, file_name: str, signature: str,
) -> Release:
    """Store the wheel, check its signature, record the release (see the module docstring)."""
    with sessions() as session:
        check_publishable(session, settings, version, file_name)
    stored = await uploads.store_upload(chunks, sessions, settings, file_name, "application/zip")

    def record() -> Release:
        with sessions() as session:
            public = settings.release_public_key()
            assert public is not None
            problem = signature_problem(public, version, stored.sha256, file_name, signature)
            if problem is not None:
                files.delete_file(session, settings.data_dir / "files", stored.id)
                raise InvalidRequestError(f"release refused: {problem}")
            release = Release(version=version, file_id=stored.id, file_name=file_name, size=stored.size,
                              sha256=stored.sha256, signature=signature)
            session.add(release)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                files.delete_file(session, settings.data_dir / "files", stored.id)
                raise ConflictError(f"release {version} already exists; publish a new version") from None
            session.refresh(release)
            session.expunge(release)
            log.info("release %s published (%s, %d bytes)", version, file_name, stored.size)
            return release

    return await run_in_threadpool(record)


def get_release(session: Session, version: str) -> Release:
    release = session.get(Release, version)
    if release is None:
        raise NotFoundError(f"release {version!r} does not exist; publish it with `fleet release publish`")
    return release


def list_releases(session: Session) -> list[Release]:
    return list(session.scalars(select(Release).order_by(Release.created_at.desc())))


def update_params(release: Release, base_url: str, url_key: bytes, drain_timeout: float | None = None) -> dict[str, Any]:
    """The `update` task params of a release, with a fresh signed download link."""
    params = UpdateParams(
        version=release.version, url=files.signed_url(base_url, url_key, release.file_id),  # type: ignore[arg-type]
        file_name=release.file_name, size=release.size, sha256=release.sha256, signature=release.signature,
        drain_timeout=drain_timeout,
    )
    return params.model_dump(mode="json", exclude_none=True)


def release_out(release: Release, params: dict[str, Any] | None = None) -> ReleaseOut:
    out = ReleaseOut.model_validate(release)
    return out.model_copy(update={"params": params})


def rollout(
    session: Session, release: Release, body: ReleaseRollout, params: dict[str, Any], publisher: Publisher, ttl: float,
) -> Answer:
    """A job of `update` runs over the target: the jobs engine's rollout and abort rules apply."""
    job = JobCreate(
        type=UPDATE_TYPE, params=params, target=body.target, rollout=body.rollout, abort=body.abort,
        timeout=body.timeout, name=body.name or f"update to {release.version}",
    )
    return jobs.create_job_once(session, job, publisher, None, ttl)


def file_release(session: Session, stored: StoredFile) -> str | None:
    """The version of the release whose wheel `stored` is, if any (such a file is not deleted)."""
    return session.scalar(select(Release.version).where(Release.file_id == stored.id))
