"""Fail-over across the nodes of a clustered broker (issue 14): the URL list setting, the order
and waits of reconnect attempts, subscriptions retried until granted, and a daemon ending its
own earlier session (`Presence.retire`)."""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from broker.connection import BrokerAddress, Failover, broker_addresses
from broker.subscribing import SubscriptionKeeper
from config.settings import SettingsError, load_settings
from device.presence import Presence
from schemas.status import DeviceFacts


class FakeClient:
    """Records what `Failover` and `SubscriptionKeeper` ask of a paho client."""

    def __init__(self) -> None:
        self.aimed: list[tuple[str, int]] = []
        self.waits: list[float] = []
        self.logins: list[tuple[str | None, str | None]] = []
        self.subscribed: list[list[tuple[str, int]]] = []
        self.lock = threading.Lock()

    def connect_async(self, host: str, port: int, keepalive: int) -> None:
        self.aimed.append((host, port))

    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None:
        assert min_delay == max_delay
        self.waits.append(min_delay)

    def username_pw_set(self, user: str | None, password: str | None) -> None:
        self.logins.append((user, password))

    def ws_set_options(self, path: str) -> None:
        pass

    def subscribe(self, topics: list[tuple[str, int]]) -> tuple[int, int]:
        with self.lock:
            self.subscribed.append(list(topics))
            return 0, len(self.subscribed)


def test_the_url_setting_takes_a_list_and_names_a_bad_entry_without_echoing_it() -> None:
    settings = load_settings(mqtt_url=" mqtt://a:1883 , mqtt://u:secret@b:1884")
    assert [(url.host, url.port) for url in settings.mqtt_urls] == [("a", 1883), ("b", 1884)]
    assert [str(address) for address in broker_addresses(settings.mqtt_url)] == ["mqtt://a:1883", "mqtt://u@b:1884"]
    assert load_settings(mqtt_url="mqtt://solo:1883").mqtt_urls[0].host == "solo"  # one URL as before
    for bad, expected in [("mqtt://a,http://u:hunter2@b", "entry 2 of 2"), ("mqtt://a,,mqtt://b", "entry 2 of 3 is empty"),
                          ("mqtt://a,mqtts://u:hunter2@b", "one scheme"), ("mqtt://u:hunter2@", "the URL")]:
        with pytest.raises(SettingsError) as error:
            load_settings(mqtt_url=bad)
        assert "FLEET_MQTT_URL" in str(error.value) and expected in str(error.value), str(error.value)
        assert "hunter2" not in str(error.value)


def failover(count: int, **options: Any) -> tuple[Failover, FakeClient]:
    client = FakeClient()
    addresses = [BrokerAddress(f"n{i}", 1883, username="dev", password=f"pw{i}") for i in range(count)]
    instance = Failover(client, addresses, 30, min_delay=1.0, max_delay=8.0, **options)  # type: ignore[arg-type]
    instance.start()
    return instance, client


def test_addresses_are_tried_in_turn_backing_off_after_each_full_pass() -> None:
    instance, client = failover(3)
    for _ in range(9):
        instance.down()  # every attempt fails
    assert [host for host, _ in client.aimed] == ["n0", "n1", "n2", "n0", "n1", "n2", "n0", "n1", "n2", "n0"]
    # at once within a pass; 1, 2, 4 s after the first, second, third full pass
    assert client.waits[1:] == [0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 4.0]
    assert client.logins[-1] == ("dev", "pw0")  # each entry's own login

    instance.connected()
    instance.down()  # the node it was on dies: the next node, after the shortest wait
    assert client.aimed[-1] == ("n1", 1883) and client.waits[-1] == 1.0
    for _ in range(3):
        instance.down()
    assert client.waits[-3:] == [0.0, 0.0, 1.0]  # the backoff started over

    for _ in range(12):
        instance.down()
    assert max(client.waits) == 8.0  # capped at max_delay


def test_a_single_url_backs_off_as_paho_did() -> None:
    instance, client = failover(1)
    for _ in range(5):
        instance.down()
    assert {host for host, _ in client.aimed} == {"n0"}
    assert client.waits[1:] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_devices_jitter_their_waits_and_a_hold_overrides_them() -> None:
    instance, client = failover(2, jitter=True, rng=random.Random(3))
    instance.connected()
    waits = []
    for _ in range(20):
        instance.down()
        waits.append(client.waits[-1])
        instance.connected()
    assert all(0.5 <= wait <= 1.5 for wait in waits) and len(set(waits)) > 10  # not in lockstep
    instance.hold(60.0)
    instance.down()
    assert client.waits[-1] == 60.0
    instance.hold(None)
    instance.stop()
    aimed = len(client.aimed)
    instance.down()  # disconnected on purpose: no reconnect anywhere
    assert len(client.aimed) == aimed


def code(value: int) -> ReasonCode:
    return ReasonCode(PacketTypes.SUBACK, identifier=value)


def test_refused_subscriptions_are_retried_until_granted() -> None:
    client = FakeClient()
    granted, refused = threading.Event(), []
    keeper = SubscriptionKeeper(client, [("a", 1), ("b", 1)], logging.getLogger("test"),  # type: ignore[arg-type]
                                on_granted=granted.set, on_refused=refused.append, min_delay=0.05, max_delay=0.1)
    keeper.connected()
    assert client.subscribed == [[("a", 1), ("b", 1)]]
    assert keeper.suback(1, [code(1), code(0x80)])
    assert refused == [["b"]] and not keeper.granted and not granted.is_set()
    pause = threading.Event()
    for _ in range(250):  # the retry comes after 0.025-0.075 s
        if len(client.subscribed) == 2:
            break
        pause.wait(0.02)
    assert client.subscribed[1] == [("b", 1)]  # only the refused one again
    assert not keeper.suback(99, [code(1)])  # not ours
    assert keeper.suback(2, [code(1)])
    assert granted.is_set() and keeper.granted

    keeper.disconnected()
    assert not keeper.granted


def facts() -> DeviceFacts:
    return DeviceFacts(name="pc", version="1", hostname="pc", os="linux", python="3.11", keepalive=30)


def test_a_restarted_daemon_ends_the_session_it_announced_before(tmp_path: Path) -> None:
    file = tmp_path / "announced"
    first = Presence("pc-1", facts(), file)
    first.next_session()
    assert first.retire() is None  # nothing announced yet
    first.birth()
    old = first.session_id
    assert first.retire() is None  # the current session is not ended

    second = Presence("pc-1", facts(), file)  # a new process on the same data dir
    second.next_session()
    ended = second.retire()
    assert ended is not None and ended[0] == old
    status = json.loads(ended[1])
    assert (status["state"], status["session_id"]) == ("offline", old)
    assert status["reason"] == f"superseded by session {second.session_id}"
    assert second.retire() is None  # once
    second.birth()
    # Its own word about the old session is no stale will to answer with a rebirth.
    from schemas.status import DeviceStatus

    assert not second.claim_rebirth(DeviceStatus.model_validate(status))

    third = Presence("pc-1", facts(), file)
    third.next_session()
    third.shutdown()  # a clean stop ended it: nothing for the next one to end
    assert Presence("pc-1", facts(), file).retire() is None
