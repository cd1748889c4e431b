"""Retained messages and wills on both brokers: keepalive → will for a client that goes silent
without closing its socket, retained set/clear/wildcards, a will only for its own topic's
subscribers, and (embedded broker) retained messages surviving a crash.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import Broker
from tests.integration.broker_conformance.mqtt_kit import Message, RawClient, Will, client_id, running

pytestmark = pytest.mark.integration


@pytest.mark.serial  # the will within 2.9–4 s (amqtt): run alone (tests/run.sh)
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
