"""Packets on the wire: `$` topics not matched by `#` or `+`, protocol violations closing only
the offending connection, the packet size limit, and (embedded broker) MQTT 5 refused at once
and a half-sent CONNECT dropped.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.harness import Broker, missing_service, wait_for
from tests.integration.broker_conformance.mqtt_kit import (
    PUBLISH,
    SUBSCRIBE,
    RawClient,
    Will,
    client_id,
    connect_packet,
    encode_packet,
    encode_string,
    running,
    socket_closed_by_broker,
)

pytestmark = pytest.mark.integration


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

    connected = connect_packet(client_id("bad"))
    violations = {
        "random bytes": bytes(random.Random(1).randrange(256) for _ in range(300)),
        "a PUBLISH before CONNECT": encode_packet(PUBLISH, 0, encode_string(f"{prefix}/x") + b"before CONNECT"),
        "wrong protocol name": connect_packet(client_id("bad"), protocol="MQIsdp2"),
        "reserved CONNECT flag": connect_packet(client_id("bad"), flags=0x03),
        "remaining length over 4 bytes": bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        "protocol level 9": connect_packet(client_id("bad"), level=9),
        "a second CONNECT": connected + connect_packet(client_id("bad")),
        "SUBSCRIBE with # mid-filter": connected + encode_packet(SUBSCRIBE, 2, struct.pack("!H", 1) + encode_string("a/#/b") + b"\x01"),
        "SUBSCRIBE at QoS 3": connected + encode_packet(SUBSCRIBE, 2, struct.pack("!H", 1) + encode_string("a/b") + b"\x03"),
        "PUBLISH to an empty topic": connected + encode_packet(PUBLISH, 0, encode_string("") + b"x"),
        "PUBLISH to a wildcard topic": connected + encode_packet(PUBLISH, 0, encode_string("a/+") + b"x"),
        "PUBLISH at QoS 3": connected + encode_packet(PUBLISH, 6, encode_string("a/b") + b"\x00\x01x"),
        "PUBLISH to a non-UTF-8 topic": connected + encode_packet(PUBLISH, 0, struct.pack("!H", 3) + b"\xff\xfe\xfd" + b"x"),
    }
    for what, data in violations.items():
        assert socket_closed_by_broker(send(data), 5), f"{broker.kind} kept the connection open after {what}"

    violator = send(connect_packet(client_id("violator"), will=Will(status, b"violator gone")))
    violator.sendall(encode_packet(PUBLISH, 0, encode_string("") + b"x"))
    assert socket_closed_by_broker(violator, 5)
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
        sender.sock.sendall(encode_packet(PUBLISH, 0, encode_string(f"{prefix}/big/over") + b"y" * (1024 * 1024 + 1)))
    assert socket_closed_by_broker(sender.sock, 5), f"{broker.kind} took a message over 1 MiB"
    assert [(m.topic, m.payload) for m in watcher.messages_until(f"{prefix}/big/will")] == [(f"{prefix}/big/will", b"sender gone")]
    watcher.disconnect()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running(Broker("amqtt", tmp_path_factory.mktemp("embedded"))) as started:
        yield started


@pytest.mark.serial  # refused within 5 s, dropped after 9–12 s: run alone (tests/run.sh)
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
    half.sendall(connect_packet(client_id("half"))[:7])
    started = time.monotonic()
    assert socket_closed_by_broker(half, 15) and 9 <= time.monotonic() - started <= 12
