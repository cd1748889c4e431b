"""Downloading an upload's media into the device's cache: resumable, verified, reported.

A file is fetched to `<cache>/<name>.part`; an interrupted download resumes from where it
stopped with an HTTP range request (when the server answers 206; otherwise it starts over).
When the expected size and sha256 are known the finished file is checked against them; a
mismatch deletes it and fails the task with `download_corrupt`.

Which URLs are fetched is the `UrlPolicy`'s call, for the first URL and for every redirect:
by default only the device's own controller's signed file links (`<FLEET_PUBLIC_API_URL>
/api/v1/files/<id>/download?expires=…&signature=…`), plus the hosts on
FLEET_UPLOAD_ALLOWED_HOSTS; anything else (another host, a loopback or private address, a
redirect elsewhere) fails the task with `url_not_allowed` before a byte is fetched.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from config.tls import CaFileError, client_verify, untrusted_certificate
from device.handlers.base import TaskFailure
from device.url_policy import UrlPolicy
from schemas.errors import WireErrorCode

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
Progress = Callable[[int, int | None], Awaitable[None]]  # bytes so far, total if known


MAX_REDIRECTS = 5


def check_url(policy: UrlPolicy, url: str) -> None:
    """Raise `url_not_allowed` for a URL the policy refuses."""
    reason = policy.problem(url)
    if reason is not None:
        raise TaskFailure(WireErrorCode.URL_NOT_ALLOWED, reason)


def cache_name(url: str, sha256: str | None) -> str:
    return sha256 or hashlib.sha256(url.encode()).hexdigest()


async def fetch(
    url: str, cache: Path, *, size: int | None, sha256: str | None, progress: Progress, policy: UrlPolicy
) -> Path:
    """The verified local copy of `url` (reused when already cached and intact); `policy`
    decides whether `url` and each redirect may be fetched at all."""
    check_url(policy, url)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / cache_name(url, sha256)
    if final.is_file() and (sha256 is None or _sha256(final) == sha256):
        await progress(final.stat().st_size, final.stat().st_size)
        return final
    part = final.with_suffix(".part")
    try:
        verify = client_verify(policy.ca_file)
    except CaFileError as exc:
        raise TaskFailure(WireErrorCode.DOWNLOAD_FAILED, str(exc)) from None
    try:
        client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=60), follow_redirects=False, verify=verify)
        async with client:
            await _download(client, url, part, size, progress, policy)
    except httpx.HTTPError as exc:
        untrusted = untrusted_certificate(exc, url.split("?")[0])  # never the link's signature
        if untrusted is not None:
            raise TaskFailure(WireErrorCode.DOWNLOAD_FAILED, untrusted) from None
        raise TaskFailure(WireErrorCode.DOWNLOAD_FAILED, f"downloading the media failed ({type(exc).__name__}); "
                          "it resumes where it stopped when the task is run again") from None
    if size is not None and part.stat().st_size != size:
        raise TaskFailure(WireErrorCode.DOWNLOAD_CORRUPT, f"downloaded {part.stat().st_size} bytes, expected {size}")
    if sha256 is not None and _sha256(part) != sha256:
        part.unlink()
        raise TaskFailure(WireErrorCode.DOWNLOAD_CORRUPT, "the downloaded file's sha256 does not match the task's; it was deleted")
    part.replace(final)
    return final


async def _open(client: httpx.AsyncClient, url: str, headers: dict[str, str], policy: UrlPolicy) -> httpx.Response:
    """The streamed answer to GET `url`, following at most MAX_REDIRECTS redirects, each one
    checked against `policy` before it is followed."""
    for _hop in range(MAX_REDIRECTS + 1):
        response = await client.send(client.build_request("GET", url, headers=headers), stream=True)
        if not response.has_redirect_location:
            return response
        await response.aclose()
        url = str(response.url.join(response.headers["location"]))
        reason = policy.problem(url)
        if reason is not None:
            raise TaskFailure(WireErrorCode.URL_NOT_ALLOWED, f"the media URL redirected elsewhere: {reason}")
    raise TaskFailure(WireErrorCode.DOWNLOAD_FAILED, f"the media URL redirected more than {MAX_REDIRECTS} times")


async def _download(
    client: httpx.AsyncClient, url: str, part: Path, size: int | None, progress: Progress, policy: UrlPolicy
) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    response = await _open(client, url, headers, policy)
    try:
        if response.status_code == 416 and size is not None and have == size:
            return  # already complete
        if response.status_code not in (200, 206):
            raise TaskFailure(WireErrorCode.DOWNLOAD_FAILED, f"GET of the media answered HTTP {response.status_code}")
        resumed = response.status_code == 206
        if not resumed:
            have = 0
        total = size or _total(response, have)
        if resumed:
            log.info("resuming a download at byte %d", have)
        with part.open("ab" if resumed else "wb") as file:
            async for chunk in response.aiter_bytes(CHUNK):
                file.write(chunk)
                have += len(chunk)
                await progress(have, total)
    finally:
        await response.aclose()


def _total(response: httpx.Response, offset: int) -> int | None:
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
