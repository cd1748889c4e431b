"""Serving the reference site inside another program's event loop (`fleet up`)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvicorn

from device.platforms.reference.site.app import create_app


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


async def serve_site(
    host: str, port: int, state_dir: Path, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Serve until `stop` is set; `ready` is set once the site listens."""
    server = uvicorn.Server(uvicorn.Config(create_app(state_dir), host=host, port=port, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign]  # the caller owns signals

    async def stop_when_asked() -> None:
        while ready is not None and not server.started and not server.should_exit and not stop.is_set():
            await asyncio.sleep(0.02)  # uvicorn offers no start-up callback; `started` is its flag
        if ready is not None and server.started:
            ready.set()
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve()
    finally:
        watcher.cancel()
