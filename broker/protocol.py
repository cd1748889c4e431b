"""The per-connection protocol handler of the embedded broker: amqtt's, with three fixes.

1. Keepalive is enforced [MQTT-3.1.2-24]. amqtt 0.12.1 reads each packet header with the
   client's keepalive as a timeout but its broker handler ignores the timeout
   (`BrokerProtocolHandler.handle_read_timeout` is `pass`), so a client that goes silent without
   closing its socket stays connected for ever and its will is never published. Here the read
   timeout is 1.5 × keepalive (`FleetBroker._initialize_client_session` sets it) and a timeout
   ends the connection as abnormal, which makes the broker publish the will.
2. An outgoing QoS 1 message stays in the session's in-flight store until its PUBACK arrives.
   amqtt drops it after 5 s without PUBACK or as soon as the connection closes (a `finally`
   in `_handle_qos1_message_flow`), so the re-send on reconnect that MQTT 3.1.1 requires
   [MQTT-4.4.0-1] (amqtt's own `_retry_deliveries`) never had anything to re-send.
3. A QoS 2 exchange is resumed where it stopped [MQTT-4.4.0-1]. Outgoing, amqtt dropped the
   message from the in-flight store when the connection closed, at PUBREC, or 5 s without an
   answer, so a reconnect re-sent nothing; here it stays until PUBCOMP, and a reconnect
   re-sends the PUBLISH with DUP (no PUBREC yet) or only the PUBREL (PUBREC came). Incoming,
   amqtt re-ran the exchange on reconnect, re-sending a PUBREC MQTT does not ask for (Mosquitto
   does not), and left a PUBREL for an id it no longer knew (one repeated after a lost
   PUBCOMP) unanswered; here the client's re-sent PUBREL releases the message, and every
   PUBREL is answered with PUBCOMP [MQTT-4.3.3-2].
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.packet import MQTTPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

_Ack = TypeVar("_Ack")

log = logging.getLogger(__name__)

KEEPALIVE_GRACE = 1.5
"""A client is dropped after this many keepalive periods without a packet [MQTT-3.1.2-24]."""


class FleetProtocolHandler(BrokerProtocolHandler):
    """amqtt's broker-side protocol handler with keepalive enforced, QoS 1 kept until acked and
    QoS 2 exchanges resumed across reconnects."""

    taken_over = False
    """Set when a newer connection with the same client id closed this one (`FleetBroker._claim_session`)."""

    def handle_read_timeout(self) -> None:
        """No packet for 1.5 × keepalive: close the connection as a network failure would,
        so the broker publishes the client's will (amqtt ignored this timeout)."""
        if self.session is None:
            return
        log.info(
            "client %s sent nothing for %.1f s (1.5 × keepalive %g s): disconnecting it",
            self.session.client_id, self.session.keep_alive, self.session.keep_alive / KEEPALIVE_GRACE,
        )
        # Release anything waiting for this client's PUBACKs first, so the broker's loop for
        # this client gets to handle the disconnection (and publish the will) at once.
        self._stop_waiters()
        asyncio.ensure_future(self.handle_connection_closed())

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        if app_message.direction != OUTGOING or not isinstance(app_message, OutgoingApplicationMessage):
            await super()._handle_qos1_message_flow(app_message)
            return
        if app_message.qos != QOS_1 or app_message.packet_id is None:
            raise AMQTTError(f"not a QoS 1 message with a packet id: {app_message!r}")
        if app_message.puback_packet is not None:
            return  # acknowledged already: nothing to re-send
        if self.session is None:
            raise AMQTTError("Session is not initialized.")
        packet_id = app_message.packet_id
        self.session.inflight_out.setdefault(packet_id, app_message)
        # A message sent before (on this or an earlier connection) goes again with DUP set.
        publish_packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        app_message.puback_packet = await self._send_and_wait(publish_packet, self._puback_waiters, packet_id, app_message)
        # Only an acknowledged message leaves the in-flight store; an unacknowledged one is
        # sent again when the client reconnects to its persistent session.
        self.session.inflight_out.pop(packet_id, None)

    async def _handle_qos2_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        """Outgoing: PUBLISH until PUBREC, then PUBREL until PUBCOMP, each step skipped when an
        earlier connection completed it; the message stays in the in-flight store until PUBCOMP.
        Incoming: amqtt's (PUBREC, then deliver at PUBREL)."""
        if app_message.direction != OUTGOING or not isinstance(app_message, OutgoingApplicationMessage):
            await super()._handle_qos2_message_flow(app_message)
            return
        if app_message.qos != QOS_2 or app_message.packet_id is None:
            raise AMQTTError(f"not a QoS 2 message with a packet id: {app_message!r}")
        if self.session is None:
            raise AMQTTError("Session is not initialized.")
        packet_id = app_message.packet_id
        self.session.inflight_out.setdefault(packet_id, app_message)
        if app_message.pubrec_packet is None:
            publish_packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
            app_message.pubrec_packet = await self._send_and_wait(publish_packet, self._pubrec_waiters, packet_id, app_message)
        if app_message.pubcomp_packet is None:
            app_message.pubrel_packet = PubrelPacket.build(packet_id)
            app_message.pubcomp_packet = await self._send_and_wait(app_message.pubrel_packet, self._pubcomp_waiters, packet_id)
        self.session.inflight_out.pop(packet_id, None)

    async def _send_and_wait(
        self, packet: MQTTPacket, waiters: dict[int, asyncio.Future[_Ack]], packet_id: int,
        publishing: OutgoingApplicationMessage | None = None,
    ) -> _Ack:
        """Send `packet` and wait, with no time limit, for its acknowledgement (the waiter is
        cancelled when the connection closes). `publishing`: the message whose PUBLISH this is,
        marked as sent once it is on the wire, so a re-send carries DUP."""
        waiter: asyncio.Future[_Ack] = asyncio.get_running_loop().create_future()
        waiters[packet_id] = waiter
        try:
            await self._send_packet(packet)
            if publishing is not None and isinstance(packet, PublishPacket):
                publishing.publish_packet = packet
            return await waiter
        finally:
            if waiters.get(packet_id) is waiter:
                del waiters[packet_id]

    async def _retry_deliveries(self) -> None:
        """On (re)connection, resume the outgoing QoS 1/2 messages of the session [MQTT-4.4.0-1],
        as amqtt did, with its 10 s limit. Incoming QoS 2 messages wait for the PUBREL the client
        re-sends (`handle_pubrel`); amqtt re-ran their exchange, re-sending its PUBREC."""
        if self.session is None:
            raise AMQTTError("Session is not initialized.")
        resumed = [
            asyncio.create_task(asyncio.wait_for(self._handle_message_flow(message), 10))
            for message in list(self.session.inflight_out.values())
        ]
        if resumed:
            await asyncio.wait(resumed)

    async def handle_pubrel(self, pubrel: PubrelPacket) -> None:
        """PUBREL → PUBCOMP, always [MQTT-4.3.3-2]. One for an exchange a closed connection left
        waiting (the client re-sends it on reconnect) releases that message for delivery here;
        one for an unknown packet id was released before, and is only answered."""
        packet_id = pubrel.packet_id
        waiter = self._pubrel_waiters.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(pubrel)  # amqtt's flow delivers the message and sends PUBCOMP
            return
        if self.session is None:
            raise AMQTTError("Session is not initialized.")
        message = self.session.inflight_in.pop(packet_id, None)
        if message is not None:
            message.pubrel_packet = pubrel
            await self.session.delivered_message_queue.put(message)
        pubcomp = PubcompPacket.build(packet_id)
        await self._send_packet(pubcomp)
        if message is not None:
            message.pubcomp_packet = pubcomp
