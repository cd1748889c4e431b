"""Sessions and QoS on both brokers: offline queueing and re-sending for a persistent session
(QoS 2 exchanges resumed in both directions), QoS downgrade, and a second connection with one
client id taking over.
"""

from __future__ import annotations

import pytest

from tests.harness import Broker
from tests.integration.broker_conformance.mqtt_kit import PUBCOMP, PUBREC, PUBREL, RawClient, Will, client_id

pytestmark = pytest.mark.integration


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
