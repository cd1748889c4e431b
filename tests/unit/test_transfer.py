"""The device's media download against a real HTTP server: verified, cached, resumed with a
range request after an interruption, and refused when the bytes do not match."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse

from device.handlers.base import TaskFailure
from device.transfer import fetch
from device.url_policy import UrlPolicy
from tests.harness import wait_for
from tests.ports import free_port, port_open


def _allow(base: str) -> UrlPolicy:
    """A policy that lets the test server's host through (as FLEET_UPLOAD_ALLOWED_HOSTS would)."""
    return UrlPolicy("http://controller.invalid:8080", (base.removeprefix("http://"),))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str | None]]]:
    """Serves files from a folder with FileResponse (which answers Range requests)."""
    folder = tmp_path / "served"
    folder.mkdir()
    ranges: list[str | None] = []
    app = FastAPI()

    @app.get("/go/{where}")
    def redirect(where: str, request: Request) -> RedirectResponse:
        ranges.append(request.headers.get("range"))
        target = "/clip.mp4" if where == "home" else f"http://127.0.0.2:{request.url.port}/clip.mp4"
        return RedirectResponse(target, status_code=302)

    @app.get("/api/v1/files/{file_id}/download")
    def signed(file_id: str, request: Request) -> FileResponse:
        ranges.append(request.headers.get("range"))
        return FileResponse(folder / "clip.mp4")

    @app.get("/{name}")
    def serve(name: str, request: Request) -> FileResponse:
        ranges.append(request.headers.get("range"))
        return FileResponse(folder / name)

    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    wait_for(lambda: port_open(port), 10, what="file server")
    yield f"http://127.0.0.1:{port}", folder, ranges
    instance.should_exit = True
    thread.join(10)


def test_download_is_verified_resumed_and_cached(server: tuple[str, Path, list[str | None]], tmp_path: Path) -> None:
    base, folder, ranges = server
    body = os.urandom(1_000_000)
    (folder / "clip.mp4").write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{digest}.part").write_bytes(body[:400_000])  # what an interrupted download left
    seen: list[tuple[int, int | None]] = []

    async def progress(done: int, total: int | None) -> None:
        seen.append((done, total))

    path = asyncio.run(fetch(f"{base}/clip.mp4", cache, size=len(body), sha256=digest, progress=progress, policy=_allow(base)))
    assert path.read_bytes() == body and path.name == digest
    assert ranges == ["bytes=400000-"]  # only the missing part was asked for
    assert seen[-1] == (len(body), len(body)) and seen[0][0] > 400_000

    again = asyncio.run(fetch(f"{base}/clip.mp4", cache, size=len(body), sha256=digest, progress=progress, policy=_allow(base)))
    assert again == path and len(ranges) == 1  # served from the cache


def test_a_corrupt_download_is_refused_and_deleted(server: tuple[str, Path, list[str | None]], tmp_path: Path) -> None:
    base, folder, _ranges = server
    (folder / "clip.mp4").write_bytes(b"not the promised video")

    async def quiet(_done: int, _total: int | None) -> None:
        return None

    with pytest.raises(TaskFailure) as failure:
        asyncio.run(fetch(f"{base}/clip.mp4", tmp_path / "cache", size=None, sha256="0" * 64, progress=quiet, policy=_allow(base)))
    assert failure.value.code == "download_corrupt"
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(TaskFailure) as missing:
        asyncio.run(fetch(f"{base}/nope.mp4", tmp_path / "cache", size=None, sha256=None, progress=quiet, policy=_allow(base)))
    assert missing.value.code == "download_failed"


def test_only_allowed_urls_are_fetched_and_redirects_are_checked(
    server: tuple[str, Path, list[str | None]], tmp_path: Path
) -> None:
    base, folder, hits = server
    (folder / "clip.mp4").write_bytes(b"video")
    controller_only = UrlPolicy(base)  # this server plays the device's controller

    async def quiet(_done: int, _total: int | None) -> None:
        return None

    def get(url: str, policy: UrlPolicy) -> Path:
        return asyncio.run(fetch(url, tmp_path / "cache", size=None, sha256=None, progress=quiet, policy=policy))

    for url in (f"{base}/clip.mp4", f"{base}/api/v1/files/abc/download", "http://127.0.0.3:9/x.mp4",
                f"{base}/api/v1/files/abc/download?expires=1", "file:///etc/passwd"):
        with pytest.raises(TaskFailure) as refused:
            get(url, controller_only)
        assert refused.value.code == "url_not_allowed", url
    assert hits == []  # refused before a single request
    assert get(f"{base}/api/v1/files/abc/download?expires=9&signature=ab", controller_only).read_bytes() == b"video"
    assert len(hits) == 1

    allowed = _allow(base)
    assert get(f"{base}/go/home", allowed).read_bytes() == b"video"  # a redirect within the allowed host
    with pytest.raises(TaskFailure) as elsewhere:
        get(f"{base}/go/away", allowed)
    assert elsewhere.value.code == "url_not_allowed" and "redirected" in elsewhere.value.message
    assert UrlPolicy(base, ("*",)).problem("http://anything.example/v.mp4") is None
