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


async def serve_site(host: str, port: int, state_dir: Path, stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""
    server = uvicorn.Server(uvicorn.Config(create_app(state_dir), host=host, port=port, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign]  # the caller owns signals

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve()
    finally:
        watcher.cancel()
