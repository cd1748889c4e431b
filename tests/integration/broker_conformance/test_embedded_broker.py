"""The embedded broker only: the amqtt version its overrides were written for, its topic trees
against the MQTT matching rules, and `fleet broker` listening on TCP and a websocket.
"""

from __future__ import annotations

import random
import re
import tomllib
from pathlib import Path

import pytest

from broker.amqtt_pin import (
    PINNED_AMQTT_VERSION,
    fingerprint_drift,
    installed_amqtt_version,
)
from tests.harness import Process, base_env, fleet_argv, wait_for
from tests.integration.broker_conformance.mqtt_kit import client_id
from tests.ports import free_port, port_open

pytestmark = pytest.mark.integration


def test_amqtt_is_the_version_the_overrides_were_written_for() -> None:
    """An amqtt upgrade must fail here, naming each overridden method whose source changed."""
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
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
        from tests.certificates import make_certificates

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
        schemes = ("mqtts", "wss") if tls else ("mqtt", "ws")
        # websockets logs its own "listening on" first; wait for the fleet's line naming both.
        listen_line = f"{schemes[0]}://127.0.0.1:{port}, {schemes[1]}://127.0.0.1:{ws_port}"
        wait_for(lambda: listen_line in process.log_tail(), 5, what=f"the listen line {listen_line!r}")
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
