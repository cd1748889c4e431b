"""Client connections to any MQTT 3.1.1 broker: URL parsing, a configured paho client, and
fail-over across the nodes of a clustered broker (`Failover`).

Every socket the project opens gets TCP_NODELAY: with Nagle's algorithm on, a task round
trip took 44–88 ms on loopback instead of about 1 ms (see docs/architecture.md#measured-facts-the-code-relies-on).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
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


def broker_addresses(urls: str | Sequence[object]) -> list[BrokerAddress]:
    """The addresses of a `FLEET_MQTT_URL` value (comma-separated) or of a list of URLs."""
    entries = [str(url).strip() for url in urls] if not isinstance(urls, str) else urls.split(",")
    return [BrokerAddress.from_url(entry.strip()) for entry in entries if entry.strip()]


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

    def failed(self, address: BrokerAddress | None = None) -> None:
        """Call from paho's `on_connect_fail`, with the address that was tried (default: the first)."""
        address = address or self._address
        reason = diagnose_unreachable(address, self._ca_file)
        if reason != self._last:
            self._last = reason
            self._logger.warning("cannot reach the MQTT broker at %s: %s; retrying", address, reason)

    def connected(self) -> None:
        """Call on a successful connection, so the next failure is logged again."""
        self._last = None


class Failover:
    """Reconnects a paho client across the brokers of a `FLEET_MQTT_URL` list (nodes of one
    cluster), through paho's own public API.

    paho's `reconnect()` dials the host and port that `connect_async` set last, after waiting
    its reconnect delay, and the host cannot be changed while it is connecting (its `host`
    setter refuses, so `on_pre_connect` cannot pick one). So the owner calls `down()` from
    `on_disconnect` and `on_connect_fail`, both of which paho runs before that wait: it points
    the client at the next address with `connect_async` and sets the wait with
    `reconnect_delay_set`. The addresses are tried in turn; within a pass the next one at
    once, after a full pass of failures the wait doubles from `min_delay` up to `max_delay`;
    after a lost connection the next address is tried after `min_delay`. With `jitter`
    (devices) each wait is stretched by a random 0.5–1.5, so a fleet whose node died does not
    reconnect in lockstep. `hold(pause)` replaces every wait with `pause` (another daemon uses
    this device id: `device.conflicts`).
    """

    def __init__(
        self, client: mqtt.Client, addresses: Sequence[BrokerAddress], keepalive: int, *,
        min_delay: float = 1.0, max_delay: float = 30.0, jitter: bool = False, rng: random.Random | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("no broker address to connect to")
        self._client = client
        self.addresses = list(addresses)
        self._keepalive = keepalive
        self._min, self._max = min_delay, max(min_delay, max_delay)
        self._rng = rng if jitter else None
        if jitter and rng is None:
            self._rng = random.Random()
        self._index = 0
        self._failed_in_pass = 0
        self._passes = 0
        self._up = False
        self._stopped = False
        self._pause: float | None = None
        self.last_wait = 0.0  # the wait set by the last `down()`, for logs and tests

    @property
    def address(self) -> BrokerAddress:
        """The broker connected to, or being tried."""
        return self.addresses[self._index]

    def start(self) -> None:
        """Point the client at the first address (call `client.loop_start()` next)."""
        self._stopped = False
        self._aim(0)
        self._set_wait(self._min)

    def stop(self) -> None:
        """The owner disconnects on purpose: `down()` no longer reconnects anywhere."""
        self._stopped = True

    def connected(self) -> None:
        """Call on a successful CONNACK."""
        self._up = True
        self._failed_in_pass = 0
        self._passes = 0

    def down(self) -> None:
        """Call from `on_disconnect` and `on_connect_fail`: aim at the next address, set the wait."""
        if self._stopped:
            return
        if self._up:  # a working connection was lost: start a new pass at the next address
            self._up = False
            self._failed_in_pass = 0
            self._passes = 0
            wait = self._min
        else:
            self._failed_in_pass += 1
            if self._failed_in_pass >= len(self.addresses):  # every address failed once: back off
                self._failed_in_pass = 0
                self._passes += 1
                wait = min(self._max, self._min * 2 ** (self._passes - 1))
            else:
                wait = 0.0
        self._aim((self._index + 1) % len(self.addresses))
        self._set_wait(wait)

    def hold(self, pause: float | None) -> None:
        """Wait `pause` seconds before every attempt from now on (None: back to normal)."""
        self._pause = pause
        if pause is not None:
            self._set_wait(pause)

    def _aim(self, index: int) -> None:
        self._index = index
        address = self.addresses[index]
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if address.websocket:
            self._client.ws_set_options(path=address.path)
        self._client.connect_async(address.host, address.port, keepalive=self._keepalive)

    def _set_wait(self, wait: float) -> None:
        if self._pause is not None:
            wait = self._pause
        elif self._rng is not None and wait > 0:
            wait = min(self._max * 1.5, wait * self._rng.uniform(0.5, 1.5))
        self.last_wait = wait
        # paho sleeps any number of seconds; its annotation says int.
        self._client.reconnect_delay_set(min_delay=cast(int, wait), max_delay=cast(int, wait))
