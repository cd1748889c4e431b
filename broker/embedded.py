"""The embedded amqtt broker that `fleet up` and `fleet broker` start in-process.

amqtt 0.12.1 speaks MQTT 3.1.1 only. Who may connect and which topics each login may use
come from the controller's password and ACL files (`broker.amqtt_acl`). The broker itself is
`broker.fleet_broker.FleetBroker`: amqtt with small overrides that make it keep MQTT 3.1.1
where the fleet relies on it (keepalive and will, retained and queued messages, QoS, `$`
topics) and route through a topic tree (`broker.topic_tree`). It listens on TCP, with TLS when
given a certificate and key, and optionally on a websocket port (`broker.listeners`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

from broker.amqtt_pin import AmqttVersionError, check_amqtt_version
from broker.amqtt_retained_store import RetainedStoreError, open_store
from broker.listeners import Listener, ListenerConfigError, listeners_for
from config.settings import ENV_PREFIX, FleetSettings
from schemas.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)


class PortInUseError(BrokerError, RuntimeError):
    """The embedded broker's port is held by another process."""


class BrokerConfigError(BrokerError, ConfigError, RuntimeError):
    """The embedded broker's settings do not say who may connect."""


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
    """The amqtt configuration with the fleet's defaults: with the controller's password and ACL
    files (FLEET_BROKER_PASSWORD_FILE, FLEET_BROKER_ACL_FILE) only provisioned identities get in,
    each limited to its topics; anonymous access only when FLEET_BROKER_ALLOW_ANONYMOUS says so.
    Retained messages are kept in FLEET_BROKER_RETAINED_FILE across restarts."""
    if settings.broker_allow_anonymous:
        plugins: dict[str, Any] = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    elif settings.broker_password_file is not None and settings.broker_acl_file is not None:
        plugins = {
            "broker.amqtt_acl.FleetPasswordAuth": {"password_file": str(settings.broker_password_file)},
            "broker.amqtt_acl.FleetTopicAcl": {"acl_file": str(settings.broker_acl_file)},
        }
    else:
        raise BrokerConfigError(
            "the embedded broker admits provisioned devices only: set FLEET_BROKER_PASSWORD_FILE and "
            "FLEET_BROKER_ACL_FILE to the files the controller keeps (fleet device add), or "
            "FLEET_BROKER_ALLOW_ANONYMOUS=true for a lab"
        )
    plugins["broker.amqtt_retained_store.RetainedStore"] = {"file": str(settings.resolved_broker_retained_file)}
    try:
        listeners = listeners_for(settings)
    except ListenerConfigError as exc:
        raise BrokerConfigError(str(exc)) from None
    return {
        "listeners": {listener.name: listener.amqtt_config() for listener in listeners},
        "session_expiry_interval": settings.broker_session_expiry,
        "plugins": plugins,
    }


class EmbeddedBroker:
    """The fleet's amqtt broker (`FleetBroker`) on the settings' listeners."""

    def __init__(self, settings: FleetSettings) -> None:
        self._settings = settings
        self._broker: Any = None

    @property
    def listeners(self) -> list[Listener]:
        return listeners_for(self._settings)

    @property
    def url(self) -> str:
        """The TCP (or TLS) listener, the one `fleet up` points the controller and device at."""
        return self.listeners[0].url

    @property
    def urls(self) -> list[str]:
        return [listener.url for listener in self.listeners]

    async def start(self) -> None:
        try:
            check_amqtt_version()
        except AmqttVersionError as exc:
            raise BrokerConfigError(str(exc)) from None
        from broker.fleet_broker import FleetBroker

        try:
            listeners = listeners_for(self._settings)
        except ListenerConfigError as exc:
            raise BrokerConfigError(str(exc)) from None
        for listener in listeners:
            try:
                ensure_port_free(listener.host, listener.port)
            except PortInUseError:
                if listener.transport == "tcp":
                    raise
                raise PortInUseError(
                    f"cannot start the embedded MQTT broker's websocket listener: {listener.host}:{listener.port} "
                    f"is already in use. Pick another port with --ws-port N or {ENV_PREFIX}BROKER_WS_PORT=N."
                ) from None
        try:
            open_store(self._settings.resolved_broker_retained_file).close()
        except RetainedStoreError as exc:
            raise BrokerConfigError(str(exc)) from None
        self._broker = FleetBroker(
            broker_config(self._settings), max_packet_bytes=self._settings.broker_max_packet_bytes,
            max_queued_messages=self._settings.broker_max_queued_messages,
        )
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", ", ".join(self.urls))

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
