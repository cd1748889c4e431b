"""The daemon's MQTT connection: a paho client bridged into asyncio, with presence built in.

Before every connection attempt a will for the next session is registered; after CONNACK the
task and status topics are subscribed, and only after the SUBACK is the birth published (the
controller re-dispatches pending tasks when it sees a birth, so the device must be listening
by then). paho runs its callbacks in its own thread: messages are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from broker.connection import BrokerAddress, ConnectFailureLog, create_client
from config import FleetSettings
from device.presence import Presence
from schemas.topics import device_status

log = logging.getLogger(__name__)

QOS = 1
CLOSE_TIMEOUT = 5.0  # seconds to wait for the shutdown status to reach the broker

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
        self._address = BrokerAddress.from_url(str(settings.mqtt_url))
        self._failures = ConnectFailureLog(self._address, settings.mqtt_ca_file, log)
        self._keepalive = settings.keepalive
        self._presence = presence
        self._status_topic = device_status(device_id)
        self._subscriptions = list(subscriptions)
        self._on_message_sink = on_message
        self._loop = loop
        self._lock = threading.Lock()
        self._subscribe_mid: int | None = None
        self._closing = False
        client = create_client(
            self._address,
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

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried with backoff."""
        self._client.connect_async(self._address.host, self._address.port, keepalive=self._keepalive)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1; while disconnected the message is queued until the next connection."""
        return self._client.publish(topic, payload, qos=QOS, retain=retain)

    def republish_birth(self) -> None:
        self.publish(self._status_topic, self._presence.birth(), retain=True)

    async def close(self) -> None:
        """Publish the retained shutdown status (when connected), wait for it, disconnect."""
        self._closing = True
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
        log.debug("connecting to %s, session %s", self._address, session_id)

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self._address, reason_code)
            return
        self._failures.connected()
        log.info("connected to %s (session %s)", self._address, self._presence.session_id)
        _rc, mid = client.subscribe([(topic, QOS) for topic in self._subscriptions])
        with self._lock:
            self._subscribe_mid = mid

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self._failures.failed()

    def _on_subscribe(
        self, client: mqtt.Client, _userdata: Any, mid: int, reason_codes: list[ReasonCode], _properties: Any
    ) -> None:
        with self._lock:
            if mid != self._subscribe_mid:
                return
            self._subscribe_mid = None
        refused = [topic for topic, code in zip(self._subscriptions, reason_codes, strict=False) if code.is_failure]
        if refused:
            log.error("broker refused subscriptions to %s (check the broker's ACL)", ", ".join(refused))
        client.publish(self._status_topic, self._presence.birth(), qos=QOS, retain=True)
        log.debug("subscribed; birth published (session %s)", self._presence.session_id)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any
    ) -> None:
        if self._closing:
            log.info("disconnected from %s", self._address)
        else:
            log.info("disconnected from %s (%s); reconnecting", self._address, reason_code)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._loop.call_soon_threadsafe(
                self._on_message_sink, message.topic, bytes(message.payload), message.retain
            )
        except RuntimeError:  # the event loop is closed: the daemon is shutting down
            pass
