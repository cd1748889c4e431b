"""A raw MQTT 3.1.1 client for the conformance tests, and the helpers their modules share.

The clients are raw sockets speaking MQTT 3.1.1 byte by byte, so a test sees exactly the
flags the broker sets (retain, DUP, QoS, session present) and can go silent or drop a
connection the way a sleeping PC or a lost NAT mapping does. Absence is proven with a sentinel:
a later message on the same connection, which the broker must deliver after anything that
would have leaked.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from tests.harness import Broker

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


# --- a raw MQTT 3.1.1 client ---------------------------------------------------------------------
def encode_string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def encode_packet(kind: int, flags: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([kind << 4 | flags]) + bytes(encoded) + body


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


class RawClient:
    """One MQTT connection over a plain socket; nothing is sent unless a method says so."""

    def __init__(
        self, port: int, client_id: str, *, clean: bool = True, keepalive: int = 60, will: Will | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.return_code, self.session_present = self.try_connect(port, client_id, clean, keepalive, will, login)
        assert self.return_code == 0, f"CONNECT refused with return code {self.return_code}"

    def try_connect(
        self, port: int, client_id: str, clean: bool = True, keepalive: int = 60, will: Will | None = None,
        login: tuple[str, str] | None = None,
    ) -> tuple[int, bool]:
        """Open the socket, send CONNECT and return the CONNACK's (return code, session present)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self._early: list[tuple[int, int, bytes]] = []
        self._next_id = 0
        flags = (0x02 if clean else 0) | (
            (0x04 | will.qos << 3 | (0x20 if will.retain else 0)) if will else 0
        ) | (0xC0 if login else 0)
        body = encode_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + encode_string(client_id)
        if will:
            body += encode_string(will.topic) + encode_string(will.payload)
        if login:
            body += encode_string(login[0]) + encode_string(login[1])
        self.sock.sendall(encode_packet(CONNECT, 0, body))
        kind, _flags, reply = self.read_packet(10)
        assert kind == CONNACK, f"expected CONNACK, got packet type {kind}"
        return reply[1], bool(reply[0] & 1)

    @classmethod
    def refused(cls, port: int, client_id: str, login: tuple[str, str], clean: bool = True) -> int:
        """The return code of a CONNECT the broker must refuse; the socket is closed afterwards."""
        client = cls.__new__(cls)
        code, _present = client.try_connect(port, client_id, clean, login=login)
        client.drop()
        return code

    # reading
    def read_packet(self, timeout: float) -> tuple[int, int, bytes]:
        """The next packet off the wire, or raises TimeoutError; EOF raises ConnectionError."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no packet") from None
            if not chunk:
                raise ConnectionError("closed by the broker")
            self._buffer += chunk

    def _parse(self) -> tuple[int, int, bytes] | None:
        data, length, multiplier, index = self._buffer, 0, 1, 1
        while True:
            if index >= len(data):
                return None
            length += (data[index] & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not data[index - 1] & 0x80:
                break
        if len(data) < index + length:
            return None
        self._buffer = data[index + length:]
        return data[0] >> 4, data[0] & 0x0F, data[index:index + length]

    def next_message(self, timeout: float = 5, ack: bool = True) -> Message:
        """The next PUBLISH (other packets skipped), acknowledged unless ack=False."""
        deadline = time.monotonic() + timeout
        while True:
            if self._early:
                kind, flags, body = self._early.pop(0)
            else:
                kind, flags, body = self.read_packet(max(deadline - time.monotonic(), 0.001))
            if kind == PUBREL and ack:  # the second half of a QoS 2 delivery
                self.send_ack(PUBCOMP, struct.unpack("!H", body)[0])
            if kind != PUBLISH:
                continue
            qos = flags >> 1 & 3
            topic_length = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + topic_length].decode()
            rest = body[2 + topic_length:]
            packet_id = struct.unpack("!H", rest[:2])[0] if qos else None
            message = Message(topic, rest[2:] if qos else rest, qos, bool(flags & 1), bool(flags & 8), packet_id)
            if ack and packet_id is not None:
                self.send_ack(PUBACK if qos == 1 else PUBREC, packet_id)
            return message

    def messages_until(self, sentinel_topic: str, timeout: float = 5) -> list[Message]:
        """Every PUBLISH up to and including the first one on `sentinel_topic`."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while not got or got[-1].topic != sentinel_topic:
            got.append(self.next_message(max(deadline - time.monotonic(), 0.001)))
        return got

    # writing
    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        """SUBSCRIBE and wait for SUBACK; returns the granted QoS (0x80: refused) per filter."""
        packet_id = self._packet_id()
        body = struct.pack("!H", packet_id) + b"".join(encode_string(f) + bytes([q]) for f, q in filters)
        self.sock.sendall(encode_packet(SUBSCRIBE, 2, body))
        while True:
            kind, flags, reply = self.read_packet(5)
            if kind == SUBACK and struct.unpack("!H", reply[:2])[0] == packet_id:
                return list(reply[2:])
            if kind == PUBLISH:  # allowed before the SUBACK [MQTT-3.8.4]: keep it for next_message
                self._early.append((kind, flags, reply))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """PUBLISH; at QoS 1 wait for the broker's PUBACK, at QoS 2 go through PUBREC, PUBREL and
        PUBCOMP (either way, the broker has taken it)."""
        packet_id = self._packet_id() if qos else None
        body = encode_string(topic) + (struct.pack("!H", packet_id) if packet_id else b"") + payload
        self.sock.sendall(encode_packet(PUBLISH, qos << 1 | int(retain), body))
        if packet_id is not None:
            self.expect_ack(PUBACK if qos == 1 else PUBREC, packet_id)
        if qos == 2 and packet_id is not None:
            self.send_ack(PUBREL, packet_id)
            self.expect_ack(PUBCOMP, packet_id)

    def publish_until_pubrec(self, topic: str, payload: bytes) -> int:
        """PUBLISH at QoS 2 and wait for the broker's PUBREC, sending no PUBREL; returns the packet id."""
        packet_id = self._packet_id()
        self.sock.sendall(encode_packet(PUBLISH, 2 << 1, encode_string(topic) + struct.pack("!H", packet_id) + payload))
        self.expect_ack(PUBREC, packet_id)
        return packet_id

    def next_ack(self, timeout: float = 5) -> tuple[int, int]:
        """(packet type, packet id) of the next PUBACK, PUBREC, PUBREL or PUBCOMP; a PUBLISH read
        meanwhile is kept for next_message."""
        while True:
            kind, flags, reply = self.read_packet(timeout)
            if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
                return kind, struct.unpack("!H", reply[:2])[0]
            if kind == PUBLISH:
                self._early.append((kind, flags, reply))

    def expect_ack(self, kind: int, packet_id: int, timeout: float = 5) -> None:
        """Wait for `kind` (PUBACK, PUBREC, PUBREL or PUBCOMP) for `packet_id`; any other
        acknowledgement in between fails."""
        got = self.next_ack(timeout)
        assert got == (kind, packet_id), f"expected packet type {kind} for packet id {packet_id}, got {got}"

    def send_ack(self, kind: int, packet_id: int) -> None:
        """PUBACK, PUBREC, PUBREL (flags 0b0010 [MQTT-3.6.1-1]) or PUBCOMP for `packet_id`."""
        self.sock.sendall(encode_packet(kind, 2 if kind == PUBREL else 0, struct.pack("!H", packet_id)))

    def puback(self, packet_id: int) -> None:
        self.send_ack(PUBACK, packet_id)

    def ping(self) -> None:
        self.sock.sendall(encode_packet(PINGREQ, 0, b""))

    def disconnect(self) -> None:
        """A clean DISCONNECT: no will."""
        try:
            self.sock.sendall(encode_packet(DISCONNECT, 0, b""))
        finally:
            self.sock.close()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a crashed client would."""
        self.sock.close()

    def closed_by_broker(self, timeout: float) -> bool:
        try:
            while True:
                self.read_packet(timeout)
        except ConnectionError:
            return True
        except TimeoutError:
            return False


def connect_packet(client_id: str, protocol: str = "MQTT", level: int = 4, flags: int = 0x02, will: Will | None = None) -> bytes:
    if will:
        flags |= 0x04 | will.qos << 3
    body = encode_string(protocol) + bytes([level, flags]) + struct.pack("!H", 60) + encode_string(client_id)
    return encode_packet(CONNECT, 0, body + (encode_string(will.topic) + encode_string(will.payload) if will else b""))


def socket_closed_by_broker(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# --- shared by the conformance modules ------------------------------------------------------------
@contextlib.contextmanager
def running(broker: Broker) -> Iterator[Broker]:
    """`broker` started, and stopped afterwards."""
    broker.start()
    try:
        yield broker
    finally:
        broker.process.stop()


def client_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"
