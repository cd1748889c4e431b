"""The per-connection protocol handler of the embedded broker: amqtt's, with two fixes.

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
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

log = logging.getLogger(__name__)

KEEPALIVE_GRACE = 1.5
"""A client is dropped after this many keepalive periods without a packet [MQTT-3.1.2-24]."""


class FleetProtocolHandler(BrokerProtocolHandler):
    """amqtt's broker-side protocol handler with keepalive enforced and QoS 1 kept until acked."""

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
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(publish_packet)
            app_message.publish_packet = publish_packet
            app_message.puback_packet = await waiter
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
        # Only an acknowledged message leaves the in-flight store; an unacknowledged one is
        # sent again when the client reconnects to its persistent session.
        self.session.inflight_out.pop(packet_id, None)

