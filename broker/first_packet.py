"""The first packet of a new connection to the embedded broker, read whole before amqtt parses it.

amqtt parses a CONNECT field by field straight off the socket. A first packet that is not a
CONNECT, or an MQTT 5 CONNECT (whose properties it does not know), leaves it waiting for bytes
that never come, and the client hangs without an answer. Reading the packet whole, with a size
limit, lets the broker refuse those at once, as Mosquitto does, and hand amqtt a complete packet.
"""

from __future__ import annotations

from amqtt.adapters import ReaderAdapter
from amqtt.codecs_amqtt import read_or_raise

CONNECT_TYPE = 1
MQTT_311_LEVEL = 4
UNACCEPTABLE_PROTOCOL_VERSION = 1  # CONNACK return code
MAX_CONNECT_BYTES = 4 * (2 + 65_535) + 64
"""Client id, will topic, will payload, user name and password are each at most 65,535 bytes,
and only a will payload or a password comes near that."""


class FirstPacketError(Exception):
    """The connection's first packet cannot start an MQTT 3.1.1 session. `connack_code`, when
    set, is the CONNACK return code to answer with before closing."""

    def __init__(self, reason: str, connack_code: int | None = None) -> None:
        super().__init__(reason)
        self.connack_code = connack_code


async def read_connect(reader: ReaderAdapter) -> bytes:
    """The whole first packet, fixed header included, once it is known to be an MQTT 3.1.1 CONNECT."""
    header = await read_or_raise(reader, 1)
    if header[0] >> 4 != CONNECT_TYPE:
        raise FirstPacketError(f"its first packet is of type {header[0] >> 4}, not CONNECT [MQTT-3.1.0-1]")
    length = 0
    for position in range(4):
        byte = (await read_or_raise(reader, 1))[0]
        header += bytes([byte])
        length += (byte & 0x7F) << (7 * position)
        if not byte & 0x80:
            break
    else:
        raise FirstPacketError("its first packet has a malformed length (more than 4 bytes)")
    if length > MAX_CONNECT_BYTES:
        raise FirstPacketError(f"a CONNECT of {length:,} bytes (at most {MAX_CONNECT_BYTES:,})")
    body = await read_or_raise(reader, length) if length else b""
    level = _protocol_level(body)
    if level is not None and level != MQTT_311_LEVEL:
        name = "MQTT 5" if level == 5 else f"protocol level {level}"
        raise FirstPacketError(
            f"a CONNECT for {name}, but this broker speaks MQTT 3.1.1 only (mosquitto_pub/sub: -V mqttv311)",
            UNACCEPTABLE_PROTOCOL_VERSION,
        )
    return header + body


def _protocol_level(body: bytes) -> int | None:
    """The level byte after the protocol name, or None when the body is too short to hold it."""
    if len(body) < 2:
        return None
    name_length = int.from_bytes(body[:2], "big")
    return body[2 + name_length] if len(body) > 2 + name_length else None
