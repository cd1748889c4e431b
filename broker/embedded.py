"""The embedded amqtt broker that `fleet up` and `fleet broker` start in-process.

amqtt 0.12.1 speaks MQTT 3.1.1 only. Who may connect and which topics each login may use
come from the controller's password and ACL files (`broker.amqtt_acl`), with one override of
amqtt's retained-message delivery (`FleetBroker`); optional TLS from a certificate and key.
Its other known gaps (no keepalive enforcement, linear subscription matching; see DESIGN.md)
are worked around by the fleet itself: devices validate every topic they receive, send
heartbeats, and the controller re-dispatches on birth.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.session import Session

from config.settings import ENV_PREFIX, FleetSettings

log = logging.getLogger(__name__)


class PortInUseError(RuntimeError):
    """The embedded broker's port is held by another process."""


class BrokerConfigError(RuntimeError):
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
    each limited to its topics; anonymous access only when FLEET_BROKER_ALLOW_ANONYMOUS says so."""
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
    listener: dict[str, Any] = {"type": "tcp", "bind": f"{settings.broker_host}:{settings.broker_port}"}
    if settings.broker_certfile is not None or settings.broker_keyfile is not None:
        if settings.broker_certfile is None or settings.broker_keyfile is None:
            raise BrokerConfigError("TLS needs both FLEET_BROKER_CERTFILE and FLEET_BROKER_KEYFILE")
        listener.update(ssl=True, certfile=str(settings.broker_certfile), keyfile=str(settings.broker_keyfile))
    return {
        "listeners": {"default": listener},
        "session_expiry_interval": settings.broker_session_expiry,
        "plugins": plugins,
    }


class FleetBroker(Broker):
    """amqtt's broker with one override: retained messages sent because of a new subscription
    pass the topic ACL's RECEIVE check first. amqtt 0.12.1 sends them even for a subscription
    its ACL refused (`_handle_subscription` tests the return code the wrong way round), which
    would let a device read another device's retained status."""

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Session) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = [
            asyncio.ensure_future(handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True))
            for topic, retained in list(self._retained_messages.items())
            if self._matches(topic, topic_filter) and await self._topic_filtering(session, topic, Action.RECEIVE)
        ]
        if sends:
            await asyncio.wait(sends)


class EmbeddedBroker:
    """An amqtt broker bound to the settings' host and port."""

    def __init__(self, settings: FleetSettings) -> None:
        self._settings = settings
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        scheme = "mqtts" if self._settings.broker_certfile else "mqtt"
        return f"{scheme}://{self._settings.broker_host}:{self._settings.broker_port}"

    async def start(self) -> None:
        ensure_port_free(self._settings.broker_host, self._settings.broker_port)
        self._broker = FleetBroker(broker_config(self._settings))
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
