"""MQTT 3.1.1 where the fleet depends on it, checked the same way on the embedded broker
(`fleet broker`, a real process) and on a Mosquitto process: keepalive → will for a client that
goes silent without closing its socket, retained set/clear/wildcards, a will only for its own
topic's subscribers, offline queueing and re-sending for a persistent session (QoS 2 exchanges
resumed in both directions), QoS downgrade, a SUBSCRIBE the ACL denies, `$` topics not matched
by `#` or `+`, a second connection with one client id taking over, a wrong password changing
nothing, and protocol violations closing only the offending connection.

The clients here are raw sockets speaking MQTT 3.1.1 byte by byte, so a test sees exactly the
flags the broker sets (retain, DUP, QoS, session present) and can go silent or drop a
connection the way a sleeping PC or a lost NAT mapping does. Absence is proven with a sentinel:
a later message on the same connection, which the broker must deliver after anything that
would have leaked.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import socket
import struct
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.amqtt_pin import (
    PINNED_AMQTT_VERSION,
    fingerprint_drift,
    installed_amqtt_version,
)
from tests.harness import Broker, Process, base_env, fleet_argv, missing_service, wait_for
from tests.ports import free_port, port_open

pytestmark = pytest.mark.integration

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


# --- a raw MQTT 3.1.1 client ---------------------------------------------------------------------
def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, flags: int, body: bytes) -> bytes:
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
        body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id)
        if will:
            body += _string(will.topic) + _string(will.payload)
        if login:
            body += _string(login[0]) + _string(login[1])
        self.sock.sendall(_packet(CONNECT, 0, body))
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
        body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([q]) for f, q in filters)
        self.sock.sendall(_packet(SUBSCRIBE, 2, body))
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
        body = _string(topic) + (struct.pack("!H", packet_id) if packet_id else b"") + payload
        self.sock.sendall(_packet(PUBLISH, qos << 1 | int(retain), body))
        if packet_id is not None:
            self.expect_ack(PUBACK if qos == 1 else PUBREC, packet_id)
        if qos == 2 and packet_id is not None:
            self.send_ack(PUBREL, packet_id)
            self.expect_ack(PUBCOMP, packet_id)

    def publish_until_pubrec(self, topic: str, payload: bytes) -> int:
        """PUBLISH at QoS 2 and wait for the broker's PUBREC, sending no PUBREL; returns the packet id."""
        packet_id = self._packet_id()
        self.sock.sendall(_packet(PUBLISH, 2 << 1, _string(topic) + struct.pack("!H", packet_id) + payload))
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
        self.sock.sendall(_packet(kind, 2 if kind == PUBREL else 0, struct.pack("!H", packet_id)))

    def puback(self, packet_id: int) -> None:
        self.send_ack(PUBACK, packet_id)

    def ping(self) -> None:
        self.sock.sendall(_packet(PINGREQ, 0, b""))

    def disconnect(self) -> None:
        """A clean DISCONNECT: no will."""
        try:
            self.sock.sendall(_packet(DISCONNECT, 0, b""))
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


# --- fixtures ------------------------------------------------------------------------------------
@contextlib.contextmanager
def running(broker: Broker) -> Iterator[Broker]:
    """`broker` started, and stopped afterwards."""
    broker.start()
    try:
        yield broker
    finally:
        broker.process.stop()


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running(Broker(request.param, tmp_path_factory.mktemp(f"conformance-{request.param}"))) as started:
        yield started


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own."""
    return f"conf/{uuid.uuid4().hex[:8]}"


def client_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


# --- the checks ----------------------------------------------------------------------------------
def test_keepalive_silent_client_is_dropped_and_its_will_published(broker: Broker, prefix: str) -> None:
    """[MQTT-3.1.2-24]: no packet for 1.5 × keepalive → disconnect and publish the will. The
    silent client never closes its socket (a sleeping PC, a lost NAT mapping); a client that
    keeps pinging with the same keepalive stays connected."""
    watcher = RawClient(broker.port, client_id("watcher"))
    assert watcher.subscribe((f"{prefix}/+/status", 1)) == [1]
    pinger = RawClient(broker.port, client_id("pinger"), keepalive=2, will=Will(f"{prefix}/pinger/status", b"offline"))
    silent = RawClient(broker.port, client_id("silent"), keepalive=2, will=Will(f"{prefix}/silent/status", b"offline"))
    started = last_ping = time.monotonic()
    will_at: float | None = None
    wills: list[Message] = []
    while time.monotonic() - started < 12:
        if time.monotonic() - last_ping >= 1:
            pinger.ping()
            last_ping = time.monotonic()
        try:
            wills.append(watcher.next_message(0.1))
        except TimeoutError:
            pass
        if will_at is None and any(m.topic == f"{prefix}/silent/status" for m in wills):
            will_at = time.monotonic() - started
        if will_at is not None and time.monotonic() - started >= 4.5:
            break  # the pinger has now outlived 1.5 × keepalive too
    assert will_at is not None, f"{broker.kind}: no will published for a client silent for 12 s (keepalive 2 s)"
    # The embedded broker times each connection out itself; Mosquitto 2.0 checks keepalives on a
    # coarser tick (its will came 3.9 to 8.7 s after the last packet in runs here).
    latest = 4.0 if broker.kind == "amqtt" else 10.0
    assert 2.9 <= will_at <= latest, f"{broker.kind}: will after {will_at:.1f} s; expected 1.5 × 2 s (at most {latest} s)"
    assert silent.closed_by_broker(2), f"{broker.kind} kept the silent client's socket open"
    assert [m.topic for m in wills] == [f"{prefix}/silent/status"], f"{broker.kind}: the pinging client was dropped"
    assert wills[0].payload == b"offline" and not wills[0].retain and wills[0].qos == 1
    late = RawClient(broker.port, client_id("late"))  # the will was retained
    late.subscribe((f"{prefix}/silent/status", 1))
    assert late.next_message().retain
    pinger.disconnect()
    for client in (watcher, late):
        client.disconnect()
    RawClient(broker.port, client_id("clear")).publish(f"{prefix}/silent/status", b"", retain=True)


def test_retained_set_clear_and_wildcards(broker: Broker, prefix: str) -> None:
    publisher = RawClient(broker.port, client_id("pub"))
    for name, value in (("a", b"1"), ("b", b"2"), ("c/d", b"3")):
        publisher.publish(f"{prefix}/r/{name}", value, retain=True)

    plus = RawClient(broker.port, client_id("plus"))
    plus.subscribe((f"{prefix}/r/+", 1))
    got = {m.topic: m for m in (plus.next_message(), plus.next_message())}
    assert set(got) == {f"{prefix}/r/a", f"{prefix}/r/b"} and all(m.retain for m in got.values())
    publisher.publish(f"{prefix}/r/live", b"now", retain=False)
    publisher.publish(f"{prefix}/r/a", b"", retain=True)  # clears a
    live = plus.messages_until(f"{prefix}/r/live")
    assert [(m.topic, m.retain) for m in live] == [(f"{prefix}/r/live", False)], "c/d leaked into +, or a live message kept retain"

    hash_ = RawClient(broker.port, client_id("hash"))
    hash_.subscribe((f"{prefix}/r/#", 1))
    publisher.publish(f"{prefix}/r/sentinel", b"end")
    seen = hash_.messages_until(f"{prefix}/r/sentinel")
    retained = {m.topic: m.payload for m in seen if m.retain}
    assert retained == {f"{prefix}/r/b": b"2", f"{prefix}/r/c/d": b"3"}, f"{broker.kind}: cleared or missing retained: {retained}"

    parent = RawClient(broker.port, client_id("parent"))  # `#` also matches its parent level
    publisher.publish(f"{prefix}/r", b"parent", retain=True)
    parent.subscribe((f"{prefix}/r/#", 1))
    assert sorted(parent.next_message().topic for _ in range(3)) == sorted([f"{prefix}/r", f"{prefix}/r/b", f"{prefix}/r/c/d"])
    for name in ("b", "c/d"):
        publisher.publish(f"{prefix}/r/{name}", b"", retain=True)
    publisher.publish(f"{prefix}/r", b"", retain=True)
    for client in (publisher, plus, hash_, parent):
        client.disconnect()


def test_will_reaches_only_its_own_topic_subscribers(broker: Broker, prefix: str) -> None:
    """A device's retained last will goes to subscribers of its status topic, never to clients
    subscribed to other topics, not even when they come back to a persistent session (amqtt
    0.12.1 sent it to them)."""
    status, tasks = f"{prefix}/dev/status", f"{prefix}/dev/tasks"
    watcher = RawClient(broker.port, client_id("watcher"))
    watcher.subscribe((status, 1))
    persistent_id = client_id("persistent")
    persistent = RawClient(broker.port, persistent_id, clean=False)
    persistent.subscribe((tasks, 1), (f"{prefix}/other/#", 1))
    persistent.disconnect()
    fresh = RawClient(broker.port, client_id("fresh"))
    fresh.subscribe((tasks, 1))

    device = RawClient(broker.port, client_id("device"), clean=False, will=Will(status, b"offline"))
    device.drop()
    will = watcher.next_message()
    assert (will.topic, will.payload) == (status, b"offline")

    back = RawClient(broker.port, persistent_id, clean=False)
    assert back.session_present
    publisher = RawClient(broker.port, client_id("pub"))
    publisher.publish(tasks, b"sentinel")
    for client in (back, fresh):
        assert [m.topic for m in client.messages_until(tasks)] == [tasks], f"{broker.kind} leaked the will"
    newcomer = RawClient(broker.port, client_id("new"))
    newcomer.subscribe((tasks, 1), (f"{prefix}/+/tasks", 1))
    publisher.publish(tasks, b"sentinel")
    assert {m.topic for m in newcomer.messages_until(tasks)} == {tasks}
    back.disconnect()
    RawClient(broker.port, persistent_id, clean=True).disconnect()  # forget the session
    publisher.publish(status, b"", retain=True)
    for client in (watcher, fresh, newcomer, publisher):
        client.disconnect()


def test_persistent_session_queues_offline_messages_and_resends_unacknowledged(broker: Broker, prefix: str) -> None:
    """clean_session=0 (no login: anonymous on the embedded broker): QoS 1 messages published
    while the client is away are delivered when it returns, without the retain flag, and one it
    received but never acknowledged is sent again, with DUP, on its next connection."""
    topic, persistent_id = f"{prefix}/q", client_id("queue")
    first = RawClient(broker.port, persistent_id, clean=False)
    assert first.subscribe((topic, 1)) == [1]
    first.disconnect()

    publisher = RawClient(broker.port, client_id("pub"))
    publisher.publish(topic, b"m1")
    publisher.publish(topic, b"m2")

    second = RawClient(broker.port, persistent_id, clean=False)
    assert second.session_present, f"{broker.kind} forgot the persistent session"
    queued = [second.next_message(ack=False), second.next_message(ack=False)]
    assert [(m.payload, m.qos, m.retain) for m in queued] == [(b"m1", 1, False), (b"m2", 1, False)]
    assert queued[0].packet_id is not None
    second.puback(queued[0].packet_id)  # m2 is never acknowledged
    second.drop()

    third = RawClient(broker.port, persistent_id, clean=False)
    assert third.session_present
    publisher.publish(topic, b"m3")
    again = [third.next_message(), third.next_message()]
    assert [(m.payload, m.dup) for m in again] == [(b"m2", True), (b"m3", False)], f"{broker.kind}: {again}"
    third.disconnect()
    RawClient(broker.port, persistent_id, clean=True).disconnect()
    publisher.disconnect()


def test_qos2_delivery_to_a_persistent_session_is_resumed_on_reconnect(broker: Broker, prefix: str) -> None:
    """[MQTT-4.4.0-1], broker → client: a QoS 2 message whose exchange a persistent-session
    subscriber left unfinished is taken up again on its next connection, at the step where it
    stopped: a PUBLISH never answered with PUBREC is sent again with DUP and the same packet id;
    once PUBREC came, only the PUBREL is sent again, and the message never again."""
    topic, persistent_id = f"{prefix}/q2", client_id("q2-sub")
    first = RawClient(broker.port, persistent_id, clean=False)
    assert first.subscribe((topic, 2)) == [2]
    publisher = RawClient(broker.port, client_id("pub"))
    publisher.publish(topic, b"exactly once", qos=2)
    sent = first.next_message(ack=False)
    assert (sent.payload, sent.qos, sent.dup) == (b"exactly once", 2, False)
    assert sent.packet_id is not None
    first.drop()  # before PUBREC

    second = RawClient(broker.port, persistent_id, clean=False)
    assert second.session_present, f"{broker.kind} forgot the persistent session"
    again = second.next_message(ack=False)
    assert (again.payload, again.qos, again.dup, again.packet_id) == (b"exactly once", 2, True, sent.packet_id), (
        f"{broker.kind} did not re-send the unacknowledged QoS 2 PUBLISH with DUP: {again}"
    )
    second.send_ack(PUBREC, sent.packet_id)
    second.expect_ack(PUBREL, sent.packet_id)
    second.drop()  # before PUBCOMP

    third = RawClient(broker.port, persistent_id, clean=False)
    assert third.session_present
    assert third.next_ack() == (PUBREL, sent.packet_id), f"{broker.kind} did not re-send the PUBREL"
    third.send_ack(PUBCOMP, sent.packet_id)
    publisher.publish(topic, b"sentinel", qos=2)
    seen = third.messages_until(topic)  # answered with PUBREC
    got = [(m.payload, m.dup) for m in seen]
    assert got == [(b"sentinel", False)], f"{broker.kind} sent the message again after its PUBREC: {got}"
    assert seen[-1].packet_id is not None
    third.expect_ack(PUBREL, seen[-1].packet_id)
    third.send_ack(PUBCOMP, seen[-1].packet_id)
    third.disconnect()
    RawClient(broker.port, persistent_id, clean=True).disconnect()
    publisher.disconnect()


def test_qos2_publish_from_a_persistent_session_is_resumed_on_reconnect(broker: Broker, prefix: str) -> None:
    """[MQTT-4.4.0-1], client → broker: a client that got PUBREC for its QoS 2 PUBLISH and went
    away before sending PUBREL sends the PUBREL on its next connection; the broker answers
    PUBCOMP (and nothing else: no second PUBREC), answers a PUBREL repeated after a lost PUBCOMP
    too, and its subscribers get the message exactly once."""
    topic, persistent_id = f"{prefix}/q2in", client_id("q2-pub")
    watcher = RawClient(broker.port, client_id("watcher"))
    assert watcher.subscribe((topic, 1)) == [1]
    first = RawClient(broker.port, persistent_id, clean=False)
    packet_id = first.publish_until_pubrec(topic, b"exactly once")
    first.drop()  # before PUBREL

    second = RawClient(broker.port, persistent_id, clean=False)
    assert second.session_present, f"{broker.kind} forgot the persistent session"
    second.send_ack(PUBREL, packet_id)
    assert second.next_ack() == (PUBCOMP, packet_id), f"{broker.kind} did not answer the PUBREL with PUBCOMP"
    second.drop()  # as if the PUBCOMP had been lost: the client sends its PUBREL once more

    third = RawClient(broker.port, persistent_id, clean=False)
    third.send_ack(PUBREL, packet_id)
    assert third.next_ack() == (PUBCOMP, packet_id), f"{broker.kind} did not answer a repeated PUBREL [MQTT-4.3.3-2]"
    third.publish(topic, b"sentinel")  # same client, same topic: delivered after the released message [MQTT-4.6.0-6]
    got = []
    while not got or got[-1] != b"sentinel":
        got.append(watcher.next_message().payload)
    assert got == [b"exactly once", b"sentinel"], f"{broker.kind} delivered {got}"
    third.disconnect()
    RawClient(broker.port, persistent_id, clean=True).disconnect()
    watcher.disconnect()


def test_delivered_qos_is_min_of_published_and_granted(broker: Broker, prefix: str) -> None:
    subscriber = RawClient(broker.port, client_id("sub"))
    assert subscriber.subscribe((f"{prefix}/q0", 0), (f"{prefix}/q1", 1)) == [0, 1]
    publisher = RawClient(broker.port, client_id("pub"))
    publisher.publish(f"{prefix}/q0", b"a", qos=1)
    publisher.publish(f"{prefix}/q1", b"b", qos=0)
    publisher.publish(f"{prefix}/q1", b"c", qos=1)
    got = [subscriber.next_message() for _ in range(3)]
    assert [(m.payload, m.qos) for m in got] == [(b"a", 0), (b"b", 0), (b"c", 1)], f"{broker.kind}: {got}"

    assert subscriber.subscribe((f"{prefix}/q0", 1)) == [1]  # a repeated SUBSCRIBE replaces the QoS
    publisher.publish(f"{prefix}/q0", b"d", qos=1)
    assert (lambda m: (m.payload, m.qos))(subscriber.next_message()) == (b"d", 1)

    publisher.publish(f"{prefix}/kept", b"r0", qos=0, retain=True)  # retained at QoS 0 stays QoS 0
    subscriber.subscribe((f"{prefix}/kept", 1))
    kept = subscriber.next_message()
    assert (kept.payload, kept.qos, kept.retain) == (b"r0", 0, True)
    publisher.publish(f"{prefix}/kept", b"", retain=True)
    subscriber.disconnect()
    publisher.disconnect()


def test_dollar_topics_are_not_matched_by_leading_wildcards(broker: Broker, prefix: str) -> None:
    """[MQTT-4.7.2-1]: `#` and `+/…` do not match a topic starting with `$`; `$…/#` does."""
    dollar = f"$fleet/{prefix.split('/')[1]}/probe"
    wild = RawClient(broker.port, client_id("wild"))
    assert wild.subscribe(("#", 1), ("+/" + dollar.split("/", 1)[1], 1), ("+/+/probe", 1)) == [1, 1, 1]
    exact = RawClient(broker.port, client_id("exact"))
    exact.subscribe(("$fleet/#", 1))
    publisher = RawClient(broker.port, client_id("pub"))
    publisher.publish(dollar, b"reserved")
    publisher.publish(f"{prefix}/sentinel", b"end")
    seen = [m.topic for m in wild.messages_until(f"{prefix}/sentinel", 10)]
    assert not [t for t in seen if t.startswith("$")], f"{broker.kind}: a leading wildcard matched {seen}"
    assert exact.next_message().topic == dollar
    for client in (wild, exact, publisher):
        client.disconnect()


def test_a_second_connection_with_the_same_client_id_takes_over(broker: Broker, prefix: str) -> None:
    """[MQTT-3.1.4-2]: the broker disconnects the client already connected with that id. A clean
    session's old connection ends without DISCONNECT, so its will is published (as Mosquitto
    does); a persistent session moves to the new connection with its subscriptions. amqtt
    0.12.1 kept both clean-session connections open, so two daemons with one id never saw it."""
    status, shared = f"{prefix}/twin/status", client_id("twin")
    watcher = RawClient(broker.port, client_id("watcher"))
    watcher.subscribe((status, 1))
    older = RawClient(broker.port, shared, will=Will(status, b"older gone", retain=False))
    newer = RawClient(broker.port, shared, will=Will(status, b"newer gone", retain=False))
    assert older.closed_by_broker(5), f"{broker.kind} kept both connections of client id {shared}"
    will = watcher.next_message()
    assert (will.topic, will.payload) == (status, b"older gone")
    assert newer.subscribe((f"{prefix}/twin/tasks", 1)) == [1]
    publisher = RawClient(broker.port, client_id("pub"))
    publisher.publish(f"{prefix}/twin/tasks", b"for the newer")
    assert newer.next_message().payload == b"for the newer"

    persistent_id = client_id("persistent")
    first = RawClient(broker.port, persistent_id, clean=False)
    assert first.subscribe((f"{prefix}/p", 1)) == [1]
    second = RawClient(broker.port, persistent_id, clean=False)
    assert second.session_present, f"{broker.kind}: the session did not move to the new connection"
    assert first.closed_by_broker(5), f"{broker.kind} kept both connections of client id {persistent_id}"
    publisher.publish(f"{prefix}/p", b"to the session")
    assert second.next_message().payload == b"to the session"
    newer.disconnect()  # a clean DISCONNECT: no will
    watcher.subscribe((f"{prefix}/twin/sentinel", 1))
    publisher.publish(f"{prefix}/twin/sentinel", b"end")
    assert [m.payload for m in watcher.messages_until(f"{prefix}/twin/sentinel")] == [b"end"]
    second.disconnect()
    RawClient(broker.port, persistent_id, clean=True).disconnect()
    for client in (watcher, publisher):
        client.disconnect()


def _connect_packet(client_id: str, protocol: str = "MQTT", level: int = 4, flags: int = 0x02, will: Will | None = None) -> bytes:
    if will:
        flags |= 0x04 | will.qos << 3
    body = _string(protocol) + bytes([level, flags]) + struct.pack("!H", 60) + _string(client_id)
    return _packet(CONNECT, 0, body + (_string(will.topic) + _string(will.payload) if will else b""))


def _closed_by_broker(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_protocol_violations_close_only_that_connection(broker: Broker, prefix: str) -> None:
    """Malformed or forbidden packets close the offending connection (publishing its will, as for
    any abnormal end) and nothing else: the broker and its other clients carry on. (Stock amqtt
    kept a connection whose first packet was not a CONNECT waiting for ever, granted the bad
    subscriptions, stopped reading after an empty topic without closing, and dropped a
    wildcard or QoS 3 PUBLISH half-read, taking the rest of its bytes for the next packets.)"""
    status = f"{prefix}/violator/status"
    watcher = RawClient(broker.port, client_id("watcher"))
    watcher.subscribe((status, 1), (f"{prefix}/alive", 1))

    def send(data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        sock.sendall(data)
        return sock

    connected = _connect_packet(client_id("bad"))
    violations = {
        "random bytes": bytes(random.Random(1).randrange(256) for _ in range(300)),
        "a PUBLISH before CONNECT": _packet(PUBLISH, 0, _string(f"{prefix}/x") + b"before CONNECT"),
        "wrong protocol name": _connect_packet(client_id("bad"), protocol="MQIsdp2"),
        "reserved CONNECT flag": _connect_packet(client_id("bad"), flags=0x03),
        "remaining length over 4 bytes": bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        "protocol level 9": _connect_packet(client_id("bad"), level=9),
        "a second CONNECT": connected + _connect_packet(client_id("bad")),
        "SUBSCRIBE with # mid-filter": connected + _packet(SUBSCRIBE, 2, struct.pack("!H", 1) + _string("a/#/b") + b"\x01"),
        "SUBSCRIBE at QoS 3": connected + _packet(SUBSCRIBE, 2, struct.pack("!H", 1) + _string("a/b") + b"\x03"),
        "PUBLISH to an empty topic": connected + _packet(PUBLISH, 0, _string("") + b"x"),
        "PUBLISH to a wildcard topic": connected + _packet(PUBLISH, 0, _string("a/+") + b"x"),
        "PUBLISH at QoS 3": connected + _packet(PUBLISH, 6, _string("a/b") + b"\x00\x01x"),
        "PUBLISH to a non-UTF-8 topic": connected + _packet(PUBLISH, 0, struct.pack("!H", 3) + b"\xff\xfe\xfd" + b"x"),
    }
    for what, data in violations.items():
        assert _closed_by_broker(send(data), 5), f"{broker.kind} kept the connection open after {what}"

    violator = send(_connect_packet(client_id("violator"), will=Will(status, b"violator gone")))
    violator.sendall(_packet(PUBLISH, 0, _string("") + b"x"))
    assert _closed_by_broker(violator, 5)
    assert watcher.next_message().payload == b"violator gone", f"{broker.kind}: no will after a protocol violation"
    assert broker.process.running
    RawClient(broker.port, client_id("pub")).publish(f"{prefix}/alive", b"yes")
    assert watcher.next_message().payload == b"yes"
    watcher.disconnect()


def test_a_message_over_the_size_limit_disconnects_its_sender(broker: Broker, prefix: str) -> None:
    """Messages up to 1 MiB pass (the embedded broker's FLEET_BROKER_MAX_PACKET_BYTES default,
    and Mosquitto's `max_packet_size` in the fleet's configuration); a client that sends a larger
    one is disconnected, with its will, and nobody receives the message. (Stock amqtt read any
    size into memory.)"""
    watcher = RawClient(broker.port, client_id("watcher"))
    watcher.subscribe((f"{prefix}/big/#", 1))
    sender = RawClient(broker.port, client_id("sender"), will=Will(f"{prefix}/big/will", b"sender gone", retain=False))
    sender.publish(f"{prefix}/big/fits", b"x" * 1_000_000)
    assert len(watcher.next_message(10).payload) == 1_000_000
    with contextlib.suppress(OSError):  # the broker may reset the connection while the rest is still being sent
        sender.sock.sendall(_packet(PUBLISH, 0, _string(f"{prefix}/big/over") + b"y" * (1024 * 1024 + 1)))
    assert _closed_by_broker(sender.sock, 5), f"{broker.kind} took a message over 1 MiB"
    assert [(m.topic, m.payload) for m in watcher.messages_until(f"{prefix}/big/will")] == [(f"{prefix}/big/will", b"sender gone")]
    watcher.disconnect()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running(Broker("amqtt", tmp_path_factory.mktemp("embedded"))) as started:
        yield started


def test_embedded_broker_refuses_mqtt5_at_once_and_drops_a_half_sent_connect(embedded: Broker) -> None:
    """The embedded broker speaks MQTT 3.1.1 only. An MQTT 5 client gets CONNACK 1 (unacceptable
    protocol version) at once, so `mosquitto_pub -V mqttv5` says what is wrong instead of hanging
    (stock amqtt never answered); a CONNECT that stops half-way is dropped after 10 s."""
    tool = shutil.which("mosquitto_pub")
    if tool is None:
        missing_service("mosquitto_pub is not installed (Debian: apt-get install mosquitto-clients)")
    started = time.monotonic()
    refused = subprocess.run([tool, "-p", str(embedded.port), "-V", "mqttv5", "-t", "a/b", "-m", "x"],
                             capture_output=True, text=True, timeout=20)
    assert refused.returncode != 0 and "Unsupported Protocol Version" in refused.stderr, refused.stderr
    assert time.monotonic() - started < 5
    wait_for(lambda: "MQTT 5, but this broker speaks MQTT 3.1.1 only" in embedded.process.log_tail(), 5, what="the log line")

    half = socket.create_connection(("127.0.0.1", embedded.port), timeout=10)
    half.sendall(_connect_packet(client_id("half"))[:7])
    started = time.monotonic()
    assert _closed_by_broker(half, 15) and 9 <= time.monotonic() - started <= 12


def test_embedded_broker_keeps_retained_messages_across_a_crash(tmp_path: Path, prefix: str) -> None:
    """Retained messages (every device's last status) are written through to
    FLEET_BROKER_RETAINED_FILE, so a broker killed with SIGKILL and started again still has
    them, cleared ones stay cleared, and binary payloads and QoS come back unchanged."""
    with running(Broker("amqtt", tmp_path)) as broker:
        watcher = RawClient(broker.port, client_id("watcher"))
        watcher.subscribe((f"{prefix}/sentinel", 1))
        publisher = RawClient(broker.port, client_id("pub"))
        binary = bytes(range(256))
        publisher.publish(f"{prefix}/pc-1/status", b"offline", qos=1, retain=True)
        publisher.publish(f"{prefix}/pc-2/status", binary, qos=0, retain=True)
        publisher.publish(f"{prefix}/pc-3/status", b"online", qos=1, retain=True)
        publisher.publish(f"{prefix}/pc-3/status", b"", qos=1, retain=True)  # cleared
        publisher.publish(f"{prefix}/sentinel", b"end")
        assert watcher.next_message().topic == f"{prefix}/sentinel"  # routed after the retained ones were stored
        broker.kill()
        broker.start()
        assert "restored 2 retained message(s)" in broker.process.log_tail()
        subscriber = RawClient(broker.port, client_id("sub"))
        subscriber.subscribe((f"{prefix}/+/status", 1))
        got = {m.topic: (m.payload, m.qos, m.retain) for m in (subscriber.next_message(), subscriber.next_message())}
        assert got == {f"{prefix}/pc-1/status": (b"offline", 1, True), f"{prefix}/pc-2/status": (binary, 0, True)}
        subscriber.subscribe((f"{prefix}/sentinel", 1))
        publisher = RawClient(broker.port, client_id("pub"))
        publisher.publish(f"{prefix}/sentinel", b"end")
        assert [m.topic for m in subscriber.messages_until(f"{prefix}/sentinel")] == [f"{prefix}/sentinel"]


def _locked(kind: str, work: Path) -> Broker:
    """A broker that admits only the logins of `LOGINS`, with the fleet's topic ACLs."""
    from broker.credentials import Identity, acl_file, hash_password, password_file

    identities = [Identity(name, role, hash_password(secret)) for name, (role, secret) in LOGINS.items()]
    (work / "passwords").write_text(password_file(identities))
    (work / "acl").write_text(acl_file(identities))
    return Broker(kind, work, password_file=work / "passwords", acl_file=work / "acl")


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def locked_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running(_locked(request.param, tmp_path_factory.mktemp(f"locked-{request.param}"))) as started:
        yield started


LOGINS = {"pc-9": ("device", "device-secret-9"), "ctl": ("controller", "controller-secret")}


def test_a_refused_login_cannot_take_over_a_connected_client(locked_broker: Broker) -> None:
    """A CONNECT with a connected device's client id but a wrong password is refused and changes
    nothing: the device stays connected, keeps its subscription and no will is published.
    amqtt 0.12.1 dropped a clean session's subscriptions, or took a persistent session over,
    before it checked the password."""
    port, device_login = locked_broker.port, ("pc-9", LOGINS["pc-9"][1])
    controller = RawClient(port, "ctl", login=("ctl", LOGINS["ctl"][1]))
    controller.subscribe(("devices/#", 1))
    device = RawClient(port, "pc-9", login=device_login, will=Will("devices/pc-9/status", b"offline", retain=False))
    assert device.subscribe(("devices/pc-9/tasks", 1)) == [1]
    for clean in (True, False):
        code = RawClient.refused(port, "pc-9", ("pc-9", "wrong password"), clean=clean)
        assert code in (4, 5), f"{locked_broker.kind} answered a wrong password with return code {code}"
    controller.publish("devices/pc-9/tasks", b"still yours")
    assert device.next_message().payload == b"still yours", f"{locked_broker.kind}: the device lost its subscription"
    seen = controller.messages_until("devices/pc-9/tasks")
    assert [m.topic for m in seen] == ["devices/pc-9/tasks"], f"{locked_broker.kind} published the device's will"
    assert not device.closed_by_broker(0.5)
    for client in (device, controller):
        client.disconnect()


def test_a_subscribe_the_acl_denies_gets_0x80_in_the_suback(locked_broker: Broker) -> None:
    """[MQTT-3.9.3]: on the embedded broker a SUBSCRIBE filter the login may not read (another
    device's tasks, or a wildcard wider than its own) is refused with return code 0x80 in the
    SUBACK, each filter on its own (the others in the same SUBSCRIBE are granted). On both
    brokers nothing published to such a filter reaches the client."""
    port = locked_broker.port
    device = RawClient(port, "pc-9", login=("pc-9", LOGINS["pc-9"][1]))
    granted = device.subscribe(("devices/pc-9/tasks", 1), ("devices/pc-8/tasks", 1), ("devices/+/tasks", 1), ("devices/#", 0))
    # Mosquitto 2.0.11 grants what its acl_file denies (measured: [1, 1, 1, 0]) and applies the
    # ACL to each message instead, so it too delivers nothing to those filters.
    expected = [1, 0x80, 0x80, 0x80] if locked_broker.kind == "amqtt" else [1, 1, 1, 0]
    assert granted == expected, f"{locked_broker.kind} answered the SUBSCRIBE with {granted}"
    controller = RawClient(port, "ctl", login=("ctl", LOGINS["ctl"][1]))
    controller.publish("devices/pc-8/tasks", b"for another device")
    controller.publish("devices/pc-9/tasks", b"sentinel")
    got = [(m.topic, m.payload) for m in device.messages_until("devices/pc-9/tasks")]
    assert got == [("devices/pc-9/tasks", b"sentinel")], f"{locked_broker.kind} delivered {got} to a refused filter"
    for client in (device, controller):
        client.disconnect()


def test_embedded_broker_reserves_an_identitys_client_id_for_its_login(tmp_path: Path) -> None:
    """A valid login may not use another identity's name as its client id, so one device cannot
    knock another offline by taking over its id. (Mosquitto has no such rule: there any login
    can take over any client id.)"""
    with running(_locked("amqtt", tmp_path)) as broker:
        device = RawClient(broker.port, "pc-9", login=("pc-9", LOGINS["pc-9"][1]))
        assert device.subscribe(("devices/pc-9/tasks", 1)) == [1]
        assert RawClient.refused(broker.port, "pc-9", ("ctl", LOGINS["ctl"][1])) == 5
        controller = RawClient(broker.port, "controller-1", login=("ctl", LOGINS["ctl"][1]))  # its own id is fine
        controller.publish("devices/pc-9/tasks", b"still connected")
        assert device.next_message().payload == b"still connected"
        wait_for(lambda: "client id pc-9 belongs to identity pc-9" in broker.process.log_tail(), 5, what="the refusal in the log")
        assert LOGINS["ctl"][1] not in broker.process.log_path.read_text()


# --- the embedded broker only ----------------------------------------------------------------------
def test_amqtt_is_the_version_the_overrides_were_written_for() -> None:
    """An amqtt upgrade must fail here, naming each overridden method whose source changed."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if re.match(r"amqtt\b", d)]
    assert pins == [f"amqtt=={PINNED_AMQTT_VERSION}"], "pyproject.toml must pin the amqtt broker.amqtt_pin was written for"
    assert installed_amqtt_version() == PINNED_AMQTT_VERSION, (
        f"amqtt {installed_amqtt_version()} is installed; the embedded broker's overrides need {PINNED_AMQTT_VERSION}"
    )
    assert fingerprint_drift() == [], "amqtt methods the overrides replace or rely on have changed; re-read them"


def test_topic_tree_matches_like_the_mqtt_rules() -> None:
    """The topic trees against a plain reading of MQTT 3.1.1 section 4.7, on many random cases."""
    from broker.topic_tree import RetainedTable, SubscriptionTable, is_valid_filter

    assert all(map(is_valid_filter, ["#", "+", "a/+/b", "a/#", "+/+", "$SYS/#", "/", "a//b"]))
    assert not any(map(is_valid_filter, ["", "a/#/b", "a#", "a/b+", "#/a", "a/+b"]))

    def reference(topic: str, topic_filter: str) -> bool:
        if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
            return False
        f_levels, t_levels = topic_filter.split("/"), topic.split("/")
        for index, level in enumerate(f_levels):
            if level == "#":
                return True
            if index >= len(t_levels) or level not in ("+", t_levels[index]):
                return False
        return len(f_levels) == len(t_levels)

    rnd, words = random.Random(6), ["a", "b", "", "$x", "c"]

    def topic() -> str:
        return "/".join(rnd.choice(words) for _ in range(rnd.randint(1, 4)))

    def topic_filter() -> str:
        levels = [rnd.choice([*words, "+", "+"]) for _ in range(rnd.randint(1, 4))]
        if rnd.random() < 0.3:
            levels[-1] = "#"
        return "/".join(levels)

    for _ in range(200):
        filters, topics = {topic_filter() for _ in range(25)}, {topic() for _ in range(25)}
        subscriptions, retained = SubscriptionTable((f, 0) for f in filters), RetainedTable((t, 0) for t in topics)
        for removed in list(filters)[:4]:
            del subscriptions[removed]
            filters.discard(removed)
        for removed in list(topics)[:4]:
            retained.pop(removed)
            topics.discard(removed)
        for t in topics | {topic() for _ in range(8)}:
            assert sorted(subscriptions.matching(t)) == sorted(f for f in filters if reference(t, f)), t
        for f in filters | {topic_filter() for _ in range(8)}:
            assert sorted(retained.matching(f)) == sorted(t for t in topics if reference(t, f)), f


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_fleet_broker_listens_on_tcp_and_websocket_and_says_where(tls: bool, tmp_path: Path) -> None:
    """`fleet broker --ws-port`: MQTT over TCP and over a websocket, both with TLS (mqtts, wss)
    when given a certificate; a message crosses from the websocket to the TCP listener."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    port, ws_port = free_port(), free_port()
    files = {}
    if tls:
        from tests.integration.test_tls import make_certificates

        certificates = make_certificates(tmp_path)
        files = {"broker_certfile": str(certificates.certfile), "broker_keyfile": str(certificates.keyfile)}
    process = Process(
        "fleet-broker-ws", fleet_argv("broker", "--port", str(port), "--ws-port", str(ws_port)), tmp_path,
        base_env(broker_allow_anonymous="true", data_dir=str(tmp_path), **files),
    )

    def client(transport: str) -> mqtt.Client:
        made = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id(transport), transport=transport, protocol=mqtt.MQTTv311)
        if tls:
            made.tls_set(ca_certs=str(certificates.cafile))
        return made

    process.start()
    try:
        wait_for(lambda: port_open(ws_port) or not process.running, 15, what="fleet broker websocket listener")
        wait_for(lambda: "listening on" in process.log_tail(), 5, what="the listen line")
        schemes = ("mqtts", "wss") if tls else ("mqtt", "ws")
        assert f"{schemes[0]}://127.0.0.1:{port}, {schemes[1]}://127.0.0.1:{ws_port}" in process.log_tail()
        subscribed, received = threading.Event(), threading.Event()
        got: list[bytes] = []
        tcp = client("tcp")
        tcp.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("ws/+", 1)
        tcp.on_subscribe = lambda *_a: subscribed.set()
        tcp.on_message = lambda _c, _u, message: (got.append(message.payload), received.set())
        tcp.connect("127.0.0.1", port)
        tcp.loop_start()
        ws = client("websockets")
        try:
            assert subscribed.wait(10), "no SUBACK on the TCP listener"
            ws.on_connect = lambda c, _u, _f, _rc, _p: c.publish("ws/hello", b"over websocket", qos=1)
            ws.connect("127.0.0.1", ws_port)
            ws.loop_start()
            assert received.wait(10) and got == [b"over websocket"]
        finally:
            for each in (ws, tcp):
                each.loop_stop()
                each.disconnect()
    finally:
        process.stop()
