"""Raw-socket MQTT 3.1.1 for the broker benchmarks: pre-encoded packets counted by size, so a
Python client is not the bottleneck the way a paho client would be."""

from __future__ import annotations

import socket
import struct


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    return _packet(0x30, _string(topic) + payload)  # QoS 0, no retain


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    first = _read_exact(sock, 1)[0]
    length, multiplier = 0, 1
    while True:
        byte = _read_exact(sock, 1)[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    return first >> 4, _read_exact(sock, length)


def connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 600) + _string(client_id)
    sock.sendall(_packet(0x10, body))
    kind, reply = _read_packet(sock)
    if kind != 2 or reply[1] != 0:
        raise ConnectionError(f"CONNECT refused: {reply!r}")
    return sock


def subscribe(sock: socket.socket, filters: list[str], qos: int = 0, packet_id: int = 1) -> None:
    """SUBSCRIBE in batches of 100 filters, each waiting for its SUBACK."""
    for start in range(0, len(filters), 100):
        batch = filters[start:start + 100]
        body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([qos]) for f in batch)
        sock.sendall(_packet(0x82, body))
        while True:
            kind, reply = _read_packet(sock)
            if kind == 9:
                if any(code == 0x80 for code in reply[2:]):
                    raise RuntimeError("a subscription was refused")
                break
        packet_id = packet_id % 65535 + 1


def fleet_filters(start: int, stop: int) -> list[str]:
    """Distinct filters shaped like a fleet's; none matches `bench/flow`."""
    shapes = ("devices/dev-{}/tasks", "fleet/groups/grp-{}/tasks", "devices/dev-{}/config/#")
    return [shapes[k % 3].format(k) for k in range(start, stop)]
