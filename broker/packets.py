"""Whole MQTT packets, read off a connection and checked before amqtt parses them.

amqtt parses each packet field by field straight off the socket. That goes wrong in three ways
this module prevents:

- A first packet that is not a CONNECT, or an MQTT 5 CONNECT (whose properties amqtt does not
  know), left amqtt waiting for bytes that never came, and the client hung with no answer.
  `read_connect` refuses those at once, as Mosquitto does.
- A packet amqtt's parser rejected half-way (a PUBLISH to a wildcard topic, for example) was
  dropped half-read: the rest of its bytes were taken for the next packets, and the connection
  went on, silently corrupted. `PacketReader` takes every packet whole and closes the
  connection on a PUBLISH that MQTT 3.1.1 forbids.
- Any packet size was read into memory. Both readers refuse a packet over their limit before
  reading it (Mosquitto's `max_packet_size`).
"""

from __future__ import annotations

import logging

from amqtt.adapters import ReaderAdapter
from amqtt.codecs_amqtt import read_or_raise

from schemas.errors import BrokerError

log = logging.getLogger(__name__)

CONNECT_TYPE, PUBLISH_TYPE = 1, 3
MQTT_311_LEVEL = 4
UNACCEPTABLE_PROTOCOL_VERSION = 1  # CONNACK return code
MAX_CONNECT_BYTES = 4 * (2 + 65_535) + 64
"""Client id, will topic, will payload, user name and password are each at most 65,535 bytes,
and only a will payload or a password comes near that."""


class PacketError(BrokerError):
    """A packet the broker will not take; the connection is closed. `connack_code`, when set, is
    the CONNACK return code to answer a CONNECT with first.

    Not an amqtt `MQTTError` on purpose: amqtt's reader loop skips those and reads on, but ends
    the connection (as abnormal, so the will is published) on any other exception."""

    def __init__(self, reason: str, connack_code: int | None = None) -> None:
        super().__init__(reason)
        self.connack_code = connack_code


async def read_packet(reader: ReaderAdapter, limit: int, *, only_type: int | None = None) -> bytes:
    """The next whole packet, fixed header included; with `only_type`, any other packet type is
    refused before anything more is read."""
    header = await read_or_raise(reader, 1)
    packet_type = header[0] >> 4
    if only_type is not None and packet_type != only_type:
        raise PacketError(f"its first packet is of type {packet_type}, not CONNECT [MQTT-3.1.0-1]")
    length = 0
    for position in range(4):
        byte = (await read_or_raise(reader, 1))[0]
        header += bytes([byte])
        length += (byte & 0x7F) << (7 * position)
        if not byte & 0x80:
            break
    else:
        raise PacketError("a packet with a malformed length (more than 4 bytes)")
    if length > limit:
        raise PacketError(f"a packet of {length:,} bytes, over the limit of {limit:,} (FLEET_BROKER_MAX_PACKET_BYTES)")
    return header + (await read_or_raise(reader, length) if length else b"")


async def read_connect(reader: ReaderAdapter) -> bytes:
    """A connection's first packet, once it is known to be an MQTT 3.1.1 CONNECT."""
    packet = await read_packet(reader, MAX_CONNECT_BYTES, only_type=CONNECT_TYPE)
    body = packet[_header_length(packet):]
    name_length = int.from_bytes(body[:2], "big") if len(body) >= 2 else len(body)
    level = body[2 + name_length] if len(body) > 2 + name_length else None
    if level is not None and level != MQTT_311_LEVEL:
        name = "MQTT 5" if level == 5 else f"protocol level {level}"
        raise PacketError(
            f"a CONNECT for {name}, but this broker speaks MQTT 3.1.1 only (mosquitto_pub/sub: -V mqttv311)",
            UNACCEPTABLE_PROTOCOL_VERSION,
        )
    return packet


def check_publish(packet: bytes) -> None:
    """Raise PacketError for a PUBLISH MQTT 3.1.1 forbids: QoS 3 [MQTT-3.3.1-4], a topic that is
    empty, has a wildcard [MQTT-3.3.2-2] or is not UTF-8 [MQTT-1.5.3-1], or a packet shorter
    than its own fields."""
    qos = packet[0] >> 1 & 3
    if qos == 3:
        raise PacketError("a PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    body = packet[_header_length(packet):]
    topic_length = int.from_bytes(body[:2], "big") if len(body) >= 2 else None
    if topic_length is None or len(body) < 2 + topic_length + (2 if qos else 0):
        raise PacketError("a PUBLISH shorter than its own topic and packet id")
    try:
        topic = body[2:2 + topic_length].decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError("a PUBLISH to a topic that is not UTF-8 [MQTT-1.5.3-1]") from None
    if not topic or "+" in topic or "#" in topic:
        raise PacketError(f"a PUBLISH to {topic!r}, which is not a topic name [MQTT-3.3.2-2, MQTT-4.7.3-1]")


def _header_length(packet: bytes) -> int:
    """Bytes of the fixed header: the type byte and 1 to 4 length bytes."""
    index = 1
    while packet[index] & 0x80:
        index += 1
    return index + 1


class PacketReader(ReaderAdapter):
    """A connection's reader for amqtt: each packet is read whole (at most `limit` bytes) and
    checked, then handed to amqtt's parser byte by byte as it asks. A packet refused here, or
    one whose fields claim more bytes than it has, ends the connection instead of corrupting it."""

    def __init__(self, inner: ReaderAdapter, limit: int, client_id: str) -> None:
        self._inner, self._limit, self._client_id = inner, limit, client_id
        self._pending = b""  # the rest of the packet amqtt is parsing

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if not self._pending:
            try:
                packet = await read_packet(self._inner, self._limit)
                if packet[0] >> 4 == PUBLISH_TYPE:
                    check_publish(packet)
            except PacketError as exc:
                log.warning("client %s sent %s: disconnecting it", self._client_id, exc)
                raise
            self._pending = packet
        if n < 0:
            n = len(self._pending)
        elif n > len(self._pending):
            log.warning("client %s sent a packet shorter than its own fields say: disconnecting it", self._client_id)
            raise PacketError("a packet shorter than its own fields say")
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()
