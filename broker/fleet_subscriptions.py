"""The embedded broker's overrides of amqtt 0.12.1 for subscriptions: SUBSCRIBE, UNSUBSCRIBE
and the retained messages a new subscription gets. `FleetBroker` (broker.fleet_broker) inherits
them; its module docstring lists what each fixes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import AMQTT_MAGIC_VALUE_RET_SUBSCRIBED, Broker
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from broker.topic_tree import is_valid_filter

log = logging.getLogger(__name__)

_FILTERS = "fleet.filters"  # Session.attributes key: the session's own topic filters


def _filters_of(session: Session) -> set[str]:
    filters: set[str] = session.attributes.setdefault(_FILTERS, set())
    return filters


class SubscriptionOverrides(Broker):
    """amqtt's `Broker` with the subscription overrides; the topic-tree tables they read are set
    up by `FleetBroker.__init__`."""

    async def _protocol_violation(self, session: Session, handler: BrokerProtocolHandler, what: str) -> None:
        """Close the connection of a client that broke the protocol, as a network failure would
        (its will is published); the client's loop carries on to the close."""
        log.warning("client %s sent %s, which MQTT 3.1.1 forbids: closing its connection", session.client_id, what)
        await handler.handle_connection_closed()

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
        """SUBSCRIBE → SUBACK, then the retained messages of each granted filter. A malformed
        filter or a QoS above 2 is a protocol violation (amqtt granted them)."""
        subscriptions = subscribe_waiter.result()
        for topic_filter, qos in subscriptions.topics:
            if not is_valid_filter(topic_filter) or qos not in (QOS_0, QOS_1, QOS_2):
                await self._protocol_violation(
                    client_session, handler, f"[MQTT-4.7.1] a SUBSCRIBE to {topic_filter!r} at QoS {qos}"
                )
                return
        return_codes = [await self.add_subscription(subscription, client_session) for subscription in subscriptions.topics]
        await handler.mqtt_acknowledge_subscription(subscriptions.packet_id, return_codes)
        for (topic_filter, qos), code in zip(subscriptions.topics, return_codes, strict=True):
            if code == AMQTT_MAGIC_VALUE_RET_SUBSCRIBED:
                continue
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_SUBSCRIBED, client_id=client_session.client_id, topic=topic_filter, qos=qos
            )
            await self._send_retained_for_subscription(topic_filter, code, client_session)

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
