"""`FleetBroker`: amqtt 0.12.1's broker made to behave as MQTT 3.1.1 says where a fleet relies on it.

amqtt's plugin API can watch events and refuse logins or topics, but it cannot change how
messages are routed, queued or re-sent, so each fix below is a small override of one amqtt
method, named after the method it replaces. They were written against amqtt 0.12.1 exactly:
`broker.amqtt_pin` refuses to start on another version, and tests/test_broker_conformance.py
fails if the source of any overridden method changed.

| amqtt 0.12.1 behaviour (measured, DESIGN.md)              | override                                   |
|-----------------------------------------------------------|--------------------------------------------|
| keepalive not enforced, will never sent for a silent peer | `_initialize_client_session` + `broker.protocol` |
| unacknowledged QoS 1 dropped instead of re-sent           | `broker.protocol.FleetProtocolHandler`     |
| on reconnect, retained messages of *every* filter in the  | `_publish_retained_messages_for_subscription` (no-op), |
|   broker sent to the client (the will "leak")             |   `_handle_subscription`                   |
| delivered at the subscriber's QoS, not min(pub, granted)  | `_handle_message_delivery`, `_run_broadcast` |
| offline QoS 1 messages dropped for anonymous clients,     | `_run_broadcast`, `_session_monitor`       |
|   whose persistent sessions were deleted at disconnect    |                                            |
| queued messages replayed with the retain flag set         | `_publish_session_retained_messages`       |
| every filter tested against every message                 | `__init__` (topic trees), `_run_broadcast` |
| re-subscribing did not change the granted QoS             | `add_subscription`                         |
| any client publish to a `$` topic closed the connection   | `_handle_message_delivery` (`$SYS/` is dropped) |
| retained messages sent for a subscription the ACL refused | `_send_retained_for_subscription`          |
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import AMQTT_MAGIC_VALUE_RET_SUBSCRIBED, Broker, RetainedApplicationMessage
from amqtt.contexts import Action, BrokerConfig
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OutgoingApplicationMessage, Session

from broker.amqtt_pin import check_amqtt_version
from broker.protocol import KEEPALIVE_GRACE, FleetProtocolHandler
from broker.topic_tree import RetainedTable, SubscriptionTable

check_amqtt_version()  # fail at import, with a clear message, on an amqtt the overrides were not written for

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 1000
"""QoS 1/2 messages kept for one disconnected persistent session (Mosquitto's default too);
newer ones are dropped, with a warning."""

_FILTERS = "fleet.filters"  # Session.attributes key: the session's own topic filters


def _filters_of(session: Session) -> set[str]:
    filters: set[str] = session.attributes.setdefault(_FILTERS, set())
    return filters


class FleetBroker(Broker):
    """amqtt's `Broker` with the overrides listed in this module's docstring."""

    def __init__(self, config: BrokerConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        check_amqtt_version()
        super().__init__(config, **kwargs)
        # Same dicts to amqtt and its plugins, plus a topic tree for matching.
        self._subscriptions: SubscriptionTable[list[tuple[Session, int]]] = SubscriptionTable()
        self._retained_messages: RetainedTable[RetainedApplicationMessage] = RetainedTable()

    # --- connections: keepalive ------------------------------------------------------------------
    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt's CONNECT handling, then our handler, whose read timeout of 1.5 × keepalive
        disconnects a silent client and so publishes its will [MQTT-3.1.2-24]."""
        _unused, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        if session.keep_alive > 0:
            session.keep_alive = session.keep_alive * KEEPALIVE_GRACE  # type: ignore[assignment]
        return FleetProtocolHandler(self.plugins_manager, loop=self._loop), session

    async def _session_monitor(self) -> None:
        """Forget disconnected clean sessions, and persistent ones after `session_expiry_interval`.
        amqtt also forgot persistent sessions of anonymous clients, and their queued messages."""
        while True:
            expiry = self.config.session_expiry_interval
            oldest = time.time() - expiry if expiry is not None else None
            stale = [
                client_id
                for client_id, (session, _handler) in self._sessions.items()
                if session.transitions.state == "disconnected"
                and (
                    session.clean_session
                    or (oldest is not None and session.last_disconnect_time is not None and session.last_disconnect_time < oldest)
                )
            ]
            for client_id in stale:
                await self._cleanup_session(client_id)
            await asyncio.sleep(1)

    # --- publishing ------------------------------------------------------------------------------
    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """A PUBLISH from a client: checked, then routed with its own QoS (amqtt dropped it and
        delivered every message at the subscriber's QoS). Returns False to close the connection."""
        app_message = wait_deliver.result()
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message)
        if app_message is None:
            return True
        topic = app_message.topic
        if not topic or "#" in topic or "+" in topic:
            log.warning("[MQTT-3.3.2-2] client %s published to an invalid topic: closing its connection", client_session.client_id)
            return False
        if topic.startswith("$SYS/") or topic == "$SYS":
            log.info("client %s may not publish to %s (reserved for the broker): dropped", client_session.client_id, topic)
            return True
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            log.info("client %s not allowed to publish to %s", client_session.client_id, topic)
            return True
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=app_message)
        await self._broadcast_message(client_session, topic, app_message.data, app_message.qos or QOS_0)
        if app_message.publish_packet is not None and app_message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, app_message.data, app_message.qos)
        return True

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[OutgoingApplicationMessage]]) -> None:
        """Deliver one message to the subscriptions whose filter matches (found in the topic tree),
        each at min(published QoS, granted QoS), and queue QoS 1/2 for disconnected persistent
        sessions, anonymous or not."""
        broadcast = await self._broadcast_queue.get()
        topic: str = broadcast["topic"]
        published_qos: int | None = broadcast.get("qos")  # None: an internal message, sent at the granted QoS
        for topic_filter in self._subscriptions.matching(topic):
            for target_session, granted_qos in list(self._subscriptions.get(topic_filter, ())):
                qos = granted_qos if published_qos is None else min(published_qos, granted_qos)
                if not await self._topic_filtering(target_session, topic=topic, action=Action.RECEIVE):
                    continue
                if target_session.transitions.state != "connected":
                    if not target_session.clean_session and qos in (QOS_1, QOS_2):
                        await self._queue_for_offline_session(broadcast, qos, target_session)
                    continue
                handler = self._get_handler(target_session)
                if handler is not None:
                    running_tasks.append(asyncio.ensure_future(handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))

    async def _queue_for_offline_session(self, broadcast: dict[str, Any], qos: int, session: Session) -> None:
        if session.retained_messages.qsize() >= MAX_QUEUED_MESSAGES:
            if not session.attributes.get("fleet.queue_full"):
                session.attributes["fleet.queue_full"] = True
                log.warning(
                    "offline queue of client %s is full (%d messages): dropping newer ones until it reconnects",
                    session.client_id, MAX_QUEUED_MESSAGES,
                )
            return
        await self._retain_broadcast_message(broadcast, qos, session)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """Send what was queued while the client was away, without the retain flag (amqtt set it:
        these are not retained messages) [MQTT-3.3.1-9]."""
        session.attributes.pop("fleet.queue_full", None)
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = []
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            sends.append(asyncio.ensure_future(handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)))
        if sends:
            await asyncio.wait(sends)

    # --- subscriptions -------------------------------------------------------------------------
    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """amqtt's checks and store; a repeated subscription replaces the granted QoS
        [MQTT-3.8.4-3] (amqtt kept the old one), and the session remembers its filters."""
        granted = await super().add_subscription(subscription, session)
        if granted == AMQTT_MAGIC_VALUE_RET_SUBSCRIBED:
            return granted
        topic_filter = subscription[0]
        subscribers = self._subscriptions[topic_filter]
        for index, (subscriber, _qos) in enumerate(subscribers):
            if subscriber.client_id == session.client_id:
                subscribers[index] = (subscriber, granted)
        _filters_of(session).add(topic_filter)
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted = super()._del_subscription(a_filter, session)
        _filters_of(session).discard(a_filter)
        if a_filter in self._subscriptions and not self._subscriptions[a_filter]:
            del self._subscriptions[a_filter]
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        """Only the session's own filters (amqtt scanned every filter in the broker)."""
        for topic_filter in list(_filters_of(session)):
            self._del_subscription(topic_filter, session)

    async def _handle_subscription(
        self, client_session: Session, handler: BrokerProtocolHandler, subscribe_waiter: asyncio.Future[Any]
    ) -> None:
        """SUBSCRIBE → SUBACK, then the retained messages of each granted filter."""
        subscriptions = subscribe_waiter.result()
        return_codes = [await self.add_subscription(subscription, client_session) for subscription in subscriptions.topics]
        await handler.mqtt_acknowledge_subscription(subscriptions.packet_id, return_codes)
        for (topic_filter, qos), code in zip(subscriptions.topics, return_codes, strict=True):
            if code == AMQTT_MAGIC_VALUE_RET_SUBSCRIBED:
                continue
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_SUBSCRIBED, client_id=client_session.client_id, topic=topic_filter, qos=qos
            )
            await self._send_retained_for_subscription(topic_filter, code, client_session)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Session) -> None:
        """Not used. amqtt calls this on every reconnect of a persistent session with each filter
        of *every* client in the broker, which sent clients retained messages (a dead device's
        last will) for topics they never subscribed to. MQTT sends retained messages only for a
        new subscription (`_handle_subscription` does that)."""

    async def _send_retained_for_subscription(self, topic_filter: str, granted_qos: int, session: Session) -> None:
        """The retained messages `topic_filter` matches (found in the topic tree) that the topic
        ACL lets `session` receive, with the retain flag, at min(granted, retained QoS)."""
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = []
        for topic in list(self._retained_messages.matching(topic_filter)):
            retained = self._retained_messages.get(topic)
            if retained is None or not await self._topic_filtering(session, topic, Action.RECEIVE):
                continue
            qos = granted_qos if retained.qos is None else min(granted_qos, retained.qos)
            sends.append(asyncio.ensure_future(handler.mqtt_publish(topic, retained.data, qos, retain=True)))
        if sends:
            await asyncio.wait(sends)
