"""`FleetBroker`: amqtt 0.12.1's broker made to behave as MQTT 3.1.1 says where a fleet relies on it.

amqtt's plugin API can watch events and refuse logins or topics, but it cannot change how
messages are routed, queued or re-sent, so each fix below is a small override of one amqtt
method, named after the method it replaces; those of SUBSCRIBE and UNSUBSCRIBE live in
`broker.fleet_subscriptions`. They were written against amqtt 0.12.1 exactly:
`broker.amqtt_pin` refuses to start on another version, and
tests/integration/broker_conformance/test_embedded_broker.py fails if the source of any overridden
method changed.

| amqtt 0.12.1 behaviour (measured: docs/architecture.md)   | override                                   |
|-----------------------------------------------------------|--------------------------------------------|
| keepalive not enforced, will never sent for a silent peer | `_initialize_client_session` + `broker.protocol` |
| a second connection with a connected client id left both  | `_handle_client_session`, `_claim_session`, |
|   connected [MQTT-3.1.4-2] (clean sessions)               |   `_handle_disconnect`                     |
| the client id's session was wiped (clean) or taken over   | `_initialize_client_session` (CONNECT only), |
|   (persistent) *before* the password was checked          |   `_handle_client_session` (login first)   |
| unacknowledged QoS 1 dropped instead of re-sent           | `broker.protocol.FleetProtocolHandler`     |
| an unfinished outgoing QoS 2 exchange dropped at         | `broker.protocol.FleetProtocolHandler`:    |
|   disconnect, never resumed [MQTT-4.4.0-1]; incoming, a   |   `_handle_qos2_message_flow`,             |
|   PUBREC re-sent and a repeated PUBREL left unanswered    |   `_retry_deliveries`, `handle_pubrel`     |
| on reconnect, retained messages of *every* filter in the  | `_handle_client_session` (not sent),       |
|   broker sent to the client (the will "leak")             |   `_handle_subscription` (new filters only) |
| delivered at the subscriber's QoS, not min(pub, granted)  | `_handle_message_delivery`, `_run_broadcast` |
| offline QoS 1 messages dropped for anonymous clients,     | `_run_broadcast`, `_session_monitor`       |
|   whose persistent sessions were deleted at disconnect    |                                            |
| queued messages replayed with the retain flag set         | `_publish_session_retained_messages`       |
| a client whose login was revoked stayed connected         | `_session_monitor` (`_drop_revoked`)       |
| every filter tested against every message                 | `__init__` (topic trees), `_run_broadcast` |
| re-subscribing did not change the granted QoS             | `add_subscription`                         |
| any client publish to a `$` topic closed the connection   | `_handle_message_delivery` (`$SYS/` is dropped) |
| retained messages sent for a subscription the ACL refused | `_send_retained_for_subscription`          |
| an invalid filter or QoS 3 in SUBSCRIBE granted           | `_handle_subscription`, `_protocol_violation` |
| a first packet that is not a CONNECT, or an MQTT 5 one,   | `_initialize_client_session` +            |
|   left the client hanging with no answer, for ever        |   `broker.packets.read_connect` (closed at once, 10 s at most) |
| a PUBLISH with QoS 3 or to a wildcard, empty or non-UTF-8 | `_handle_client_session` +                 |
|   topic dropped half-read, corrupting the connection; no  |   `broker.packets.PacketReader` (whole     |
|   limit on a packet's size                                |   packets, checked; the connection closed) |
| any login could take over any client id, and with it a   | `_handle_client_session`, `_held_by_another_login` |
|   persistent session's queued messages                     |   (CONNACK 5)                              |
| a will published with the broker's rights, wherever its   | `_handle_client_session` (CONNACK 5),      |
|   login's ACL forbade (a device could post as another)    |   `_handle_disconnect`, `_close_taken_over` |
| a retained task message re-run on every reconnect         | `_handle_message_delivery` (dropped), `_will_allowed` |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, WriterAdapter
from amqtt.broker import RetainedApplicationMessage, Server
from amqtt.contexts import Action, BrokerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OutgoingApplicationMessage, Session

from broker.amqtt_acl import FleetPasswordAuth
from broker.amqtt_pin import check_amqtt_version
from broker.fleet_subscriptions import SubscriptionOverrides
from broker.packets import PacketError, PacketReader, read_connect
from broker.protocol import KEEPALIVE_GRACE, FleetProtocolHandler
from broker.topic_tree import RetainedTable, SubscriptionTable
from config.settings import DEFAULT_BROKER_MAX_PACKET_BYTES, DEFAULT_BROKER_MAX_QUEUED_MESSAGES
from schemas.topics import is_task_topic

check_amqtt_version()  # fail at import, with a clear message, on an amqtt the overrides were not written for

log = logging.getLogger(__name__)


CONNECT_TIMEOUT = 10.0
"""Seconds a new connection has to send its whole CONNECT; a silent or half-sent one is closed then."""

TAKEOVER_CLOSE_TIMEOUT = 5.0
"""Seconds a taken-over connection gets to close before the new one goes ahead without waiting."""

_RENEWED_ON_RECONNECT = ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive", "username", "password")
"""What a resumed persistent session takes from the new CONNECT (amqtt forgot `will_retain`)."""


def _connect_failure(exc: Exception) -> str:
    """Why a new connection got no session, in words for the broker's log."""
    if isinstance(exc, asyncio.TimeoutError):
        return f"no complete CONNECT within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, PacketError):
        return str(exc)
    if isinstance(exc, (NoDataError, OSError)):
        return "the client went away before its CONNECT was complete"
    return f"an invalid CONNECT ({exc})"


class FleetBroker(SubscriptionOverrides):
    """amqtt's `Broker` with the overrides listed in this module's docstring."""

    def __init__(
        self, config: BrokerConfig | dict[str, Any] | None = None, *,
        max_packet_bytes: int = DEFAULT_BROKER_MAX_PACKET_BYTES,
        max_queued_messages: int = DEFAULT_BROKER_MAX_QUEUED_MESSAGES, **kwargs: Any,
    ) -> None:
        check_amqtt_version()
        super().__init__(config, **kwargs)
        self._max_packet_bytes = max_packet_bytes
        # QoS 1/2 messages kept for one disconnected persistent session (the controller's while it
        # restarts); newer ones are dropped, with a warning. Sized for a fleet, not Mosquitto's 1,000.
        self._max_queued_messages = max_queued_messages
        # Same dicts to amqtt and its plugins, plus a topic tree for matching.
        self._subscriptions: SubscriptionTable[list[tuple[Session, int]]] = SubscriptionTable()
        self._retained_messages: RetainedTable[RetainedApplicationMessage] = RetainedTable()
        self._claiming = asyncio.Lock()  # one CONNECT at a time takes a session, so two racing ones cannot both win

    # --- connections: CONNECT, login, take-over, keepalive ---------------------------------------
    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Read the CONNECT, nothing more: which session it gets is decided after the login is
        checked (`_handle_client_session`). Our handler's read timeout of 1.5 × keepalive
        disconnects a silent client and so publishes its will [MQTT-3.1.2-24]."""
        try:
            packet = await asyncio.wait_for(read_connect(reader), CONNECT_TIMEOUT)
            _unused, session = await BrokerProtocolHandler.init_from_connect(BufferReader(packet), writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError, PacketError, OSError) as exc:  # asyncio.TimeoutError is an OSError
            reason = _connect_failure(exc)
            log.warning("connection from %s:%s closed: %s", remote_address, remote_port, reason)
            with contextlib.suppress(OSError):
                if isinstance(exc, PacketError) and exc.connack_code is not None:
                    writer.write(ConnackPacket.build(0, exc.connack_code).to_bytes())
                    await writer.drain()
                await writer.close()
            raise AMQTTError(reason) from exc
        if session.keep_alive > 0:
            session.keep_alive = session.keep_alive * KEEPALIVE_GRACE  # type: ignore[assignment]
        return FleetProtocolHandler(self.plugins_manager, loop=self._loop), session

    async def _handle_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, client_session: Session,
        handler: BrokerProtocolHandler, server: Server, listener_name: str,
    ) -> None:
        """A connection's life: login (its will checked against its ACL), session, CONNACK,
        queued messages, then its packets."""
        if not await self._authenticate(client_session, self.listeners_config[listener_name]) or not await self._will_allowed(
            client_session, "connection refused (CONNACK 5, not authorized)"
        ):
            await self._refuse(client_session, handler, reader, writer)
            return
        async with self._claiming:
            owner = self._held_by_another_login(client_session)
            if owner is None:
                session = await self._claim_session(client_session)
                handler.attach(session, PacketReader(reader, self._max_packet_bytes, session.client_id), writer)
                self._sessions[session.client_id] = (session, handler)
        if owner is not None:
            log.warning(
                "login %s refused: client id %s is held by a session of login %s (connect with your own client id)",
                client_session.username, client_session.client_id, owner,
            )
            await self._refuse(client_session, handler, reader, writer)
            return
        await handler.mqtt_connack_authorize(True)
        await self.plugins_manager.fire_event(BrokerEvents.CLIENT_CONNECTED, client_id=session.client_id, client_session=session)
        await handler.start()
        await self._publish_session_retained_messages(session)
        await self._client_message_loop(session, handler)

    @staticmethod
    async def _refuse(session: Session, handler: BrokerProtocolHandler, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """CONNACK 5 (not authorized), then close the connection."""
        handler.attach(session, reader, writer)
        await handler.mqtt_connack_authorize(False)
        await writer.close()

    def _held_by_another_login(self, new: Session) -> str | None:
        """The login whose connected or persistent session holds `new`'s client id, if it is not
        `new`'s own: a client id is never taken over, nor a session's queued messages read, by
        another login (amqtt let any login take over any client id)."""
        existing = self._sessions.get(new.client_id or "")
        if existing is None:
            return None
        held = existing[0]
        if not held.transitions.is_connected() and held.clean_session:
            return None  # a finished clean session: nothing left to take
        owner: str | None = held.username
        return owner if owner is not None and owner != new.username else None

    async def _claim_session(self, new: Session) -> Session:
        """The session an authenticated CONNECT gets. A client already connected with this id is
        disconnected [MQTT-3.1.4-2]; a clean session replaces the old one, a persistent one
        resumes it (session present) with the new connection's will, keepalive and login."""
        client_id = new.client_id
        assert client_id is not None
        existing = self._sessions.get(client_id)
        if existing is not None and existing[0].transitions.is_connected():
            await self._close_taken_over(*existing, publish_will=new.clean_session)
        if existing is None or new.clean_session or existing[0].clean_session:
            await self._delete_session(client_id)
            new.parent = 0
            new.transitions.connect()
            return new
        resumed = existing[0]
        for attribute in _RENEWED_ON_RECONNECT:
            setattr(resumed, attribute, getattr(new, attribute))
        resumed.parent = 1
        if not resumed.transitions.is_connected():
            resumed.transitions.connect()
        return resumed

    async def _close_taken_over(self, session: Session, handler: BrokerProtocolHandler, *, publish_will: bool) -> None:
        """Disconnect a client whose id a new connection took over. When its session ends with
        it (the new connection starts a clean one), its will is published, as Mosquitto does."""
        log.warning("client %s connected again: closing its older connection [MQTT-3.1.4-2]", session.client_id)
        if isinstance(handler, FleetProtocolHandler):
            handler.taken_over = True
        if publish_will and session.will_flag and session.will_topic is not None and await self._will_allowed(session, "not published"):
            await self._broadcast_message(session, session.will_topic, session.will_message, session.will_qos)
            if session.will_retain:
                await self.retain_message(session, session.will_topic, session.will_message, session.will_qos)
        await handler.handle_connection_closed()
        try:
            # Closing flushes what was queued for the old peer; a peer that vanished may never read it.
            await asyncio.wait_for(self._stop_handler(handler), TAKEOVER_CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("the older connection of client %s did not close in %g s: left to time out", session.client_id, TAKEOVER_CLOSE_TIMEOUT)

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        """amqtt's, except for a connection another took over: its will was dealt with then, and
        its session (if persistent, now the new connection's) must stay connected."""
        if client_session.will_flag and not await self._will_allowed(client_session, "not published"):
            client_session.will_flag = False  # amqtt's disconnect below would publish it with the broker's rights
        if isinstance(handler, FleetProtocolHandler) and handler.taken_over:
            await self._stop_handler(handler)
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_DISCONNECTED, client_id=client_session.client_id, client_session=client_session
            )
            return
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _will_allowed(self, session: Session, outcome: str) -> bool:
        """A will goes only where its login may publish, and never retained on a task topic
        (amqtt published wills with the broker's own rights). Checked at CONNECT and again when
        the will is published, since the ACL may have changed in between; a refusal is logged."""
        if not session.will_flag or session.will_topic is None:
            return True
        topic = session.will_topic
        if session.will_retain and is_task_topic(topic):
            why = "retained on a task topic, which never carries retained messages"
        elif not await self._topic_filtering(session, topic=topic, action=Action.PUBLISH):
            why = "not allowed by its login's ACL"
        else:
            return True
        log.warning("client %s (login %s): its will on %s is %s; %s", session.client_id, session.username, topic, why, outcome)
        return False

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
            await self._drop_revoked()
            await asyncio.sleep(1)

    async def _drop_revoked(self) -> None:
        """Disconnect every client whose login is no longer in the password file (revoked, or its
        device deleted: docs/architecture.md#housekeeping), as Mosquitto and NATS do when they
        reload their files: its reconnect is then refused. amqtt kept such a client connected."""
        auth = next((p for p in self.plugins_manager.plugins if isinstance(p, FleetPasswordAuth)), None)
        if auth is None:
            return  # anonymous broker: no logins to revoke
        logins = auth.logins()
        for client_id, (session, handler) in list(self._sessions.items()):
            if session.username is None or session.username in logins or not session.transitions.is_connected():
                continue
            log.warning("client %s disconnected: its login %s was revoked", client_id, session.username)
            if handler.writer is not None:
                with contextlib.suppress(OSError):
                    await handler.writer.close()

    # --- publishing ------------------------------------------------------------------------------
    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """A PUBLISH from a client: checked, then routed with its own QoS (amqtt delivered every
        message at the subscriber's QoS)."""
        app_message = wait_deliver.result()
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message)
        if app_message is None:
            return True
        topic = app_message.topic  # a valid topic name: `broker.packets.PacketReader` checked it
        if topic.startswith("$SYS/") or topic == "$SYS":
            log.info("client %s may not publish to %s (reserved for the broker): dropped", client_session.client_id, topic)
            return True
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            log.info("client %s not allowed to publish to %s", client_session.client_id, topic)
            return True
        retained = app_message.publish_packet is not None and app_message.publish_packet.retain_flag
        if retained and app_message.data and is_task_topic(topic):  # an empty one clears: let it through
            log.warning(
                "client %s published a retained message to %s: dropped (task topics never carry retained "
                "messages, which would run again on every reconnect; publish without the retain flag)",
                client_session.client_id, topic,
            )
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
        if session.retained_messages.qsize() >= self._max_queued_messages:
            if not session.attributes.get("fleet.queue_full"):
                session.attributes["fleet.queue_full"] = True
                log.warning(
                    "offline queue of client %s is full (%d messages): dropping newer ones until it reconnects",
                    session.client_id, self._max_queued_messages,
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
