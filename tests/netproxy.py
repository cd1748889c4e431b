"""A TCP relay between MQTT clients and a broker that a test can cut and restore.

A cut behaves like a pulled cable or a NAT that dropped its mapping, not like a closed socket:
no byte passes in either direction and no close is passed on, so each side only finds out
through its own keepalive. New connections made during the cut are accepted and then hear
nothing. `restore()` lets traffic through again and aborts every connection that lived through
the cut (they are dead in reality), so clients reconnect and the broker sees a reset.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from tests.ports import free_port

CHUNK = 65536


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tainted: bool = False  # lived through a cut
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for pump in self.pumps:
            pump.cancel()


class TcpProxy:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`target_port` in a background thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._cut = False
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def cut(self) -> None:
        """From now on nothing passes and nothing is closed."""
        self._call(self._set_cut())

    def restore(self) -> None:
        """Let traffic through again; connections that lived through the cut are aborted."""
        self._call(self._restore())

    def close(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _set_cut(self) -> None:
        self._cut = True
        for link in self._links:
            link.tainted = True

    async def _restore(self) -> None:
        self._cut = False
        for link in [link for link in self._links if link.tainted]:
            link.abort()
            self._links.discard(link)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        link = _Link(client_writer, tainted=self._cut)
        self._links.add(link)
        if self._cut:
            # No SYN would reach the broker: hold the client until restore() aborts it.
            link.pumps.append(asyncio.ensure_future(self._drain(client_reader)))
            return
        try:
            upstream_reader, link.upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            self._links.discard(link)
            return
        link.pumps += [
            asyncio.ensure_future(self._pump(client_reader, link.upstream, link)),
            asyncio.ensure_future(self._pump(upstream_reader, client_writer, link)),
        ]

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(CHUNK):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self._cut:
                    continue  # lost on the wire
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        if self._cut or link.tainted:
            return  # the other side must not hear of it: it finds out by its keepalive
        link.abort()
        self._links.discard(link)
