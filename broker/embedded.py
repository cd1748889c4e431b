"""The embedded amqtt broker that `fleet up` and `fleet broker` start in-process.

amqtt 0.12.1 speaks MQTT 3.1.1 only. Its known gaps (no keepalive enforcement, will leaks,
linear subscription matching; see DESIGN.md) are worked around by the fleet itself: devices
validate every topic they receive and the controller re-dispatches on birth.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

from amqtt.broker import Broker

from config.settings import ENV_PREFIX, FleetSettings

log = logging.getLogger(__name__)


class PortInUseError(RuntimeError):
    """The embedded broker's port is held by another process."""


def port_in_use_message(host: str, port: int) -> str:
    return (
        f"cannot start the embedded MQTT broker: {host}:{port} is already in use "
        f"(another broker such as Mosquitto may be running there). Pick another port with "
        f"--broker-port N or {ENV_PREFIX}BROKER_PORT=N, or use the running broker with "
        f"{ENV_PREFIX}MQTT_URL=mqtt://{host}:{port} and --no-broker."
    )


def ensure_port_free(host: str, port: int) -> None:
    """Raise PortInUseError with a helpful message when host:port cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name != "nt":  # on POSIX this only ignores TIME_WAIT; on Windows it would allow stealing
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), errno.EACCES):
                raise PortInUseError(port_in_use_message(host, port)) from None
            raise


def broker_config(settings: FleetSettings) -> dict[str, Any]:
    """The amqtt configuration with the fleet's defaults."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{settings.broker_host}:{settings.broker_port}"}},
        "session_expiry_interval": settings.broker_session_expiry,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


class EmbeddedBroker:
    """An amqtt broker bound to the settings' host and port."""

    def __init__(self, settings: FleetSettings) -> None:
        self._settings = settings
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self._settings.broker_host}:{self._settings.broker_port}"

    async def start(self) -> None:
        ensure_port_free(self._settings.broker_host, self._settings.broker_port)
        self._broker = Broker(broker_config(self._settings))
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, run until `stop` is set, then shut down."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
