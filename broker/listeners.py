"""Where the embedded broker listens: MQTT over TCP (TLS when given a certificate and key) and,
optionally, MQTT over a websocket (wss with the same certificate) for devices behind proxies
that pass only HTTP(S). Turns the settings into amqtt listener configuration and into the
addresses `fleet broker` prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from config.settings import FleetSettings
from schemas.errors import ConfigError


class ListenerConfigError(ConfigError, ValueError):
    """The listener settings are incomplete (e.g. a certificate without its key)."""


@dataclass(frozen=True)
class Listener:
    """One socket the broker listens on."""

    name: str
    transport: Literal["tcp", "ws"]
    host: str
    port: int
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def url(self) -> str:
        scheme = {("tcp", False): "mqtt", ("tcp", True): "mqtts", ("ws", False): "ws", ("ws", True): "wss"}
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme[(self.transport, self.tls)]}://{host}:{self.port}"

    def amqtt_config(self) -> dict[str, Any]:
        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        config: dict[str, Any] = {"type": self.transport, "bind": f"{bind_host}:{self.port}"}
        if self.tls:
            config.update(ssl=True, certfile=str(self.certfile), keyfile=str(self.keyfile))
        return config


def listeners_for(settings: FleetSettings) -> list[Listener]:
    """The TCP listener on FLEET_BROKER_PORT and, with FLEET_BROKER_WS_PORT, a websocket one;
    both use TLS when FLEET_BROKER_CERTFILE and FLEET_BROKER_KEYFILE are set."""
    certfile, keyfile = settings.broker_certfile, settings.broker_keyfile
    if (certfile is None) != (keyfile is None):
        raise ListenerConfigError("TLS needs both FLEET_BROKER_CERTFILE and FLEET_BROKER_KEYFILE")
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            raise ListenerConfigError(f"TLS file not found: {path}")
    listeners = [Listener("default", "tcp", settings.broker_host, settings.broker_port, certfile, keyfile)]
    if settings.broker_ws_port is not None:
        if settings.broker_ws_port == settings.broker_port:
            raise ListenerConfigError(f"FLEET_BROKER_WS_PORT must differ from FLEET_BROKER_PORT ({settings.broker_port})")
        listeners.append(Listener("websocket", "ws", settings.broker_host, settings.broker_ws_port, certfile, keyfile))
    return listeners
