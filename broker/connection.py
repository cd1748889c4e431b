"""Client connections to any MQTT 3.1.1 broker: URL parsing and a configured paho client.

Every socket the project opens gets TCP_NODELAY: with Nagle's algorithm on, a task round
trip took 44–88 ms on loopback instead of about 1 ms (see docs/architecture.md#measured-facts-the-code-relies-on).
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

# mqtt/mqtts: MQTT over TCP (TLS); ws/wss: MQTT over a websocket (TLS), for PCs behind
# proxies that only let HTTP(S) out.
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    websocket: bool = False
    path: str = "/mqtt"

    @classmethod
    def from_url(cls, url: str) -> "BrokerAddress":
        parts = urlsplit(str(url))
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"MQTT URL must start with mqtt://, mqtts://, ws:// or wss://, got scheme {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("MQTT URL has no host name, e.g. mqtt://127.0.0.1:1883")
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            tls=parts.scheme in ("mqtts", "wss"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            websocket=parts.scheme in ("ws", "wss"),
            path=parts.path or "/mqtt",
        )

    @property
    def scheme(self) -> str:
        return ("wss" if self.tls else "ws") if self.websocket else ("mqtts" if self.tls else "mqtt")

    def __str__(self) -> str:
        """The address without its password, safe for logs."""
        user = f"{self.username}@" if self.username else ""
        path = self.path if self.websocket else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}{path}"


def _set_nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (e.g. a websocket wrapper)
        pass


def create_client(
    address: BrokerAddress,
    client_id: str,
    *,
    clean_session: bool = True,
    ca_file: Path | None = None,
    reconnect_min_delay: float = 1.0,
    reconnect_max_delay: float = 30.0,
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, callback API v2) with credentials, TLS, TCP_NODELAY and
    exponential reconnect backoff configured. Callbacks and will are the caller's."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        transport="websockets" if address.websocket else "tcp",
    )
    if address.websocket:
        client.ws_set_options(path=address.path)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(
            ca_certs=str(ca_file) if ca_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.on_socket_open = _set_nodelay
    set_reconnect_delays(client, reconnect_min_delay, reconnect_max_delay)
    client.max_queued_messages_set(0)  # no cap: a burst of task events must never be dropped
    client.max_inflight_messages_set(100)
    return client


def set_reconnect_delays(client: mqtt.Client, min_delay: float, max_delay: float) -> None:
    """paho's exponential reconnect backoff, in whole seconds (at least 1)."""
    client.reconnect_delay_set(min_delay=max(1, round(min_delay)), max_delay=max(1, round(max_delay)))


def diagnose_unreachable(address: BrokerAddress, ca_file: Path | None = None, timeout: float = 2.0) -> str:
    """Why a connection to the broker fails, with what to do about it.

    paho reports a failed attempt without its cause, so this probes once more: TCP first,
    then the TLS handshake with the same trust settings the client uses.
    """
    try:
        raw = socket.create_connection((address.host, address.port), timeout=timeout)
    except ConnectionRefusedError:
        return f"connection refused: no broker listens on {address.host}:{address.port} (check FLEET_MQTT_URL)"
    except socket.gaierror as exc:
        return f"cannot resolve host {address.host!r} ({exc.strerror})"
    except OSError as exc:
        return f"cannot connect to {address.host}:{address.port} ({exc.strerror or exc.__class__.__name__})"
    with raw:
        if not address.tls:
            return "the broker accepted TCP but the MQTT connection failed"
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        try:
            with context.wrap_socket(raw, server_hostname=address.host):
                return "the TLS handshake succeeded but the MQTT connection failed"
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the broker's TLS certificate is not trusted ({exc.verify_message}); "
                "give its CA bundle with FLEET_MQTT_CA_FILE"
            )
        except (ssl.SSLError, OSError) as exc:
            return f"TLS handshake with the broker failed ({exc}); is it a TLS (mqtts://) listener?"


class ConnectFailureLog:
    """Logs why connecting to the broker fails: one warning per distinct cause, not one per retry."""

    def __init__(self, address: BrokerAddress, ca_file: Path | None, logger: logging.Logger) -> None:
        self._address = address
        self._ca_file = ca_file
        self._logger = logger
        self._last: str | None = None

    def failed(self) -> None:
        """Call from paho's `on_connect_fail`."""
        reason = diagnose_unreachable(self._address, self._ca_file)
        if reason != self._last:
            self._last = reason
            self._logger.warning("cannot reach the MQTT broker at %s: %s; retrying", self._address, reason)

    def connected(self) -> None:
        """Call on a successful connection, so the next failure is logged again."""
        self._last = None
