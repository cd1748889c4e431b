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
from fastapi.responses import FileResponse

from device.handlers.base import TaskFailure
from device.transfer import fetch
from tests.harness import free_port, port_open, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str | None]]]:
    """Serves files from a folder with FileResponse (which answers Range requests)."""
    folder = tmp_path / "served"
    folder.mkdir()
    ranges: list[str | None] = []
    app = FastAPI()

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

    path = asyncio.run(fetch(f"{base}/clip.mp4", cache, size=len(body), sha256=digest, progress=progress))
    assert path.read_bytes() == body and path.name == digest
    assert ranges == ["bytes=400000-"]  # only the missing part was asked for
    assert seen[-1] == (len(body), len(body)) and seen[0][0] > 400_000

    again = asyncio.run(fetch(f"{base}/clip.mp4", cache, size=len(body), sha256=digest, progress=progress))
    assert again == path and len(ranges) == 1  # served from the cache


def test_a_corrupt_download_is_refused_and_deleted(server: tuple[str, Path, list[str | None]], tmp_path: Path) -> None:
    base, folder, _ranges = server
    (folder / "clip.mp4").write_bytes(b"not the promised video")

    async def quiet(_done: int, _total: int | None) -> None:
        return None

    with pytest.raises(TaskFailure) as failure:
        asyncio.run(fetch(f"{base}/clip.mp4", tmp_path / "cache", size=None, sha256="0" * 64, progress=quiet))
    assert failure.value.code == "download_corrupt"
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(TaskFailure) as missing:
        asyncio.run(fetch(f"{base}/nope.mp4", tmp_path / "cache", size=None, sha256=None, progress=quiet))
    assert missing.value.code == "download_failed"
