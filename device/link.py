"""The daemon's MQTT connection: a paho client bridged into asyncio, with presence built in.

Before every connection attempt a will for the next session is registered; after CONNACK the
task and status topics are subscribed, and only once the broker granted every one is the birth
published (the controller re-dispatches pending tasks when it sees a birth, so the device must
be listening by then). A refused subscription is retried (`broker.subscribing`) and the daemon
never announces itself while deaf: a session of this daemon that the controller may still take
for online (its node died, so no will came) is declared ended instead (`Presence.retire`).
With several broker URLs the link fails over between them (`broker.connection.Failover`).
paho runs its callbacks in its own thread: messages are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from broker.connection import ConnectFailureLog, Failover, broker_addresses, create_client
from broker.subscribing import SubscriptionKeeper
from config import FleetSettings
from device.conflicts import DROPPED_WITHIN, DuplicateIdGuard
from device.presence import Presence
from schemas.topics import device_config, device_status

log = logging.getLogger(__name__)

QOS = 1
CLOSE_TIMEOUT = 5.0  # seconds to wait for the shutdown status to reach the broker
STABLE_AFTER = 600.0  # a connection that lasted this long ends a suspected id conflict

MessageSink = Callable[[str, bytes, bool], None]  # topic, payload, retain flag


class MqttLink:
    def __init__(
        self,
        settings: FleetSettings,
        device_id: str,
        presence: Presence,
        subscriptions: list[str],
        on_message: MessageSink,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        addresses = broker_addresses(settings.mqtt_url)
        self._failures = ConnectFailureLog(addresses[0], settings.mqtt_ca_file, log)
        self._keepalive = settings.keepalive
        self._presence = presence
        self._status_topic = device_status(device_id)
        self._subscriptions = list(subscriptions)
        self._on_message_sink = on_message
        self._loop = loop
        self._lock = threading.Lock()
        self._closing = False
        self._device_id = device_id
        self._guard = DuplicateIdGuard()
        self._connected_at: float | None = None
        self._other_daemon: str | None = None  # another daemon's status seen on this connection
        client = create_client(
            addresses[0],
            client_id=device_id,
            clean_session=True,
            ca_file=settings.mqtt_ca_file,
            reconnect_min_delay=settings.reconnect_min_delay,
            reconnect_max_delay=settings.reconnect_max_delay,
        )
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._failover = Failover(client, addresses, self._keepalive, min_delay=settings.reconnect_min_delay,
                                  max_delay=settings.reconnect_max_delay, jitter=True)
        self._subscriber = SubscriptionKeeper(
            client, [(topic, QOS) for topic in self._subscriptions], log, on_granted=self._on_granted,
            on_refused=self._on_refused, min_delay=settings.reconnect_min_delay,
            max_delay=settings.reconnect_max_delay,
        )
        self._delays = (settings.reconnect_min_delay, settings.reconnect_max_delay)
        # Subscriptions the birth does not wait for: the retained config topic (an ACL written
        # before it existed must not keep the device deaf) and the groups the config names.
        self._config_keeper = SubscriptionKeeper(client, [(device_config(device_id), QOS)], log, on_granted=lambda: None,
                                                 min_delay=self._delays[0], max_delay=self._delays[1])
        self._group_topics: list[str] = []
        self._on_groups: Callable[[list[str], list[str]], None] = lambda _granted, _refused: None
        self._groups_keeper = self._keeper_of([])

    def _keeper_of(self, topics: list[str]) -> SubscriptionKeeper:
        return SubscriptionKeeper(
            self._client, [(topic, QOS) for topic in topics], log,
            on_granted=lambda: self._groups_answered(topics, []),
            on_refused=lambda refused: self._groups_answered([t for t in topics if t not in refused], refused),
            min_delay=self._delays[0], max_delay=self._delays[1],
        )

    def set_group_topics(self, topics: list[str], on_answer: Callable[[list[str], list[str]], None]) -> None:
        """Subscribe to exactly `topics` (group task topics) from now on, on this and every later
        connection; `on_answer(granted, refused)` is called (paho's thread, or now) once the
        broker answered."""
        with self._lock:
            removed = [topic for topic in self._group_topics if topic not in topics]
            old, self._group_topics, self._on_groups = self._groups_keeper, list(topics), on_answer
            self._groups_keeper = self._keeper_of(list(topics))
        old.disconnected()  # its retry timers stop
        if removed and self._client.is_connected():
            self._client.unsubscribe(removed)
        if self._client.is_connected():
            self._subscribe_groups()

    def _subscribe_groups(self) -> None:
        if self._group_topics:
            self._groups_keeper.connected()
        else:
            self._on_groups([], [])

    def _groups_answered(self, granted: list[str], refused: list[str]) -> None:
        self._on_groups(granted, refused)

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried with backoff."""
        self._failover.start()
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = QOS) -> mqtt.MQTTMessageInfo:
        """Publish (QoS 1 unless told); while disconnected a QoS 1 message is queued until the
        next connection."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    @property
    def born(self) -> bool:
        """Connected, listening on every task topic, and announced (heartbeats are sent only then:
        the controller takes a session that heartbeats for born, `controller.unborn`)."""
        return self._client.is_connected() and self._subscriber.granted and self._presence.born

    def republish_birth(self) -> None:
        if self._subscriber.granted:
            self.publish(self._status_topic, self._presence.birth(), retain=True)

    def other_daemon_seen(self, other: str, still_online: bool) -> None:
        """After connecting, another daemon's retained status was found on this device's topic."""
        with self._lock:
            self._other_daemon = other
        if still_online:
            log.warning(
                "device id %s was in use by %s, which has not gone offline; if it still runs, two PCs share this id: "
                "give each its own FLEET_DEVICE_ID", self._device_id, other,
            )
        else:
            log.info("device id %s was last used by %s", self._device_id, other)

    def _check_conflict(self, other: str | None, lasted: float) -> None:
        """Called on an unexpected disconnect: was it another daemon with our id taking over?"""
        if other is None or lasted >= DROPPED_WITHIN:
            return
        pause = self._guard.contested()
        if pause is None:
            return
        log.error(
            "device id %s is also used by %s: the broker lets one client id connect at a time, so the two keep "
            "dropping each other. Give each PC its own FLEET_DEVICE_ID (or delete the copied device_id file in its "
            "data directory). This daemon now waits %.0f s before reconnecting.",
            self._device_id, other, pause,
        )
        self._failover.hold(pause)

    async def close(self) -> None:
        """Publish the retained shutdown status (when connected), wait for it, disconnect."""
        self._closing = True
        self._failover.stop()
        if self._client.is_connected():
            info = self.publish(self._status_topic, self._presence.shutdown(), retain=True)
            deadline = self._loop.time() + CLOSE_TIMEOUT
            while not info.is_published() and self._client.is_connected() and self._loop.time() < deadline:
                await asyncio.sleep(0.02)
            if not info.is_published():
                log.warning("the shutdown status was not confirmed by the broker")
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # --- paho callbacks (paho's thread) -----------------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, _userdata: Any) -> None:
        session_id = self._presence.next_session()
        client.will_set(self._status_topic, self._presence.will(), qos=QOS, retain=True)
        log.debug("connecting to %s, session %s", self._failover.address, session_id)

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self._failover.address, reason_code)
            return
        self._failures.connected()
        self._failover.connected()
        self._connected_at = time.monotonic()
        with self._lock:
            self._other_daemon = None
        log.info("connected to %s (session %s)", self._failover.address, self._presence.session_id)
        self._subscriber.connected()
        self._config_keeper.connected()
        if self._group_topics:
            self._groups_keeper.connected()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self._failures.failed(self._failover.address)
        self._failover.down()

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason_codes: list[ReasonCode], _properties: Any
    ) -> None:
        if not self._subscriber.suback(mid, reason_codes) and not self._config_keeper.suback(mid, reason_codes):
            self._groups_keeper.suback(mid, reason_codes)

    def _on_granted(self) -> None:
        """Every subscription granted: end the daemon's previous session, if the controller may
        still take it for online, then announce this one (both retained, in this order)."""
        self._retire_previous()
        self._client.publish(self._status_topic, self._presence.birth(), qos=QOS, retain=True)
        log.debug("subscribed; birth published (session %s)", self._presence.session_id)

    def _on_refused(self, _topics: list[str]) -> None:
        """Deaf for now: the previous session must not stay advertised online meanwhile."""
        self._retire_previous()

    def _retire_previous(self) -> None:
        ended = self._presence.retire()
        if ended is not None:
            session_id, payload = ended
            self._client.publish(self._status_topic, payload, qos=QOS, retain=True)
            log.info("session %s of this daemon declared ended", session_id)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any
    ) -> None:
        lasted = 0.0 if self._connected_at is None else time.monotonic() - self._connected_at
        self._connected_at = None
        with self._lock:
            other, self._other_daemon = self._other_daemon, None
        self._subscriber.disconnected()
        self._config_keeper.disconnected()
        self._groups_keeper.disconnected()
        if self._guard.pause and lasted >= STABLE_AFTER:
            self._guard.reset()
            self._failover.hold(None)
        if not self._closing:
            self._check_conflict(other, lasted)
        address = self._failover.address
        self._failover.down()
        if self._closing:
            log.info("disconnected from %s", address)
        elif self._guard.pause:
            log.warning("dropped by %s (%s); another daemon uses this device id: reconnecting in %.0f s",
                        address, reason_code, self._guard.pause)
        elif lasted:
            log.info("disconnected from %s (%s); reconnecting to %s", address, reason_code, self._failover.address)
        else:
            log.info("connecting to %s failed (%s); trying %s", address, reason_code, self._failover.address)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._loop.call_soon_threadsafe(
                self._on_message_sink, message.topic, bytes(message.payload), message.retain
            )
        except RuntimeError:  # the event loop is closed: the daemon is shutting down
            pass
