"""The controller's MQTT client: subscribes to device status and results, validates each
message and queues it for the ingest writer (`controller.ingest`), and publishes task
envelopes; the broker's PUBACK of a task's message is queued too, and only that makes the
task `dispatched` (`controller.acks`).

paho runs the callbacks in its own network thread, which must never wait on the database:
they only parse, validate, throttle and count, then enqueue; the writer thread does the SQL.
paho reconnects by itself, so the controller starts (and its REST API answers) even while the
broker is down; with several broker URLs it fails over between them (`broker.connection.Failover`),
and a subscription the broker refuses is retried until granted (`broker.subscribing`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from broker.connection import ConnectFailureLog, Failover, broker_addresses, create_client
from broker.subscribing import SubscriptionKeeper
from config.settings import FleetSettings
from controller.acks import AckTracker
from controller.ingest import RECONNECTED, Acked, Incoming, IngestStats, IngestWriter, Unreadable
from controller.instance import LinkWatch, controller_client_id
from controller.recent_ids import RecentIds
from controller.services import groups, task_control, unreadable
from controller.services.finished import Finished
from controller.throttle import DeviceThrottle, FloodLog, StatusGate
from schemas.config_sync import ReportedConfig
from schemas.events import TaskEvent
from schemas.signing import Signer
from schemas.status import DeviceStatus, Heartbeat
from schemas.tasks import TaskEnvelope
from schemas.topics import (
    ALL_CONFIG_REPORTED,
    ALL_HEARTBEATS,
    ALL_RESULTS,
    ALL_STATUS,
    ALL_TASKS,
    is_task_topic,
    parse_config_reported_topic,
    parse_device_topic,
)
from schemas.validation import describe_validation_error

log = logging.getLogger(__name__)

QOS = 1
CLEAR_AGAIN = (1.0, 3.0, 8.0)  # seconds after a first clear of a retained message it is cleared again
OWN_TASK_MEMORY = 50_000  # ids of the controller's own recent task publishes, to skip their echoes
# A topic at least as long as any task topic, for sizing a message before its topic is known.
SIZE_PROBE_TOPIC = "fleet/groups/" + "x" * 64 + "/tasks"

# What each incoming channel carries, and its name in log lines.
_PAYLOADS: dict[str, tuple[type[BaseModel], str]] = {
    "status": (DeviceStatus, "status message"),
    "heartbeat": (Heartbeat, "heartbeat"),
    "results": (TaskEvent, "task event"),
}


class ControllerMqtt:
    """The controller's connection to the broker (persistent session, QoS 1 everywhere)."""

    def __init__(
        self, settings: FleetSettings, sessions: sessionmaker[Session], signer: Signer | None = None,
        committed: Callable[[list[object]], None] | None = None,
    ) -> None:
        """`committed`: called after each ingest batch was recorded (see `IngestWriter`)."""
        self._sessions = sessions
        self._settings = settings
        self.max_payload_bytes = settings.max_payload_bytes
        self._throttle = DeviceThrottle(settings.device_message_rate, settings.device_message_burst)
        self._flood = FloodLog()
        self._status_gate = StatusGate(settings.device_status_rate, settings.device_status_burst,
                                       lambda device_id, payload: self._accept(device_id, "status", payload), self._flood)
        self._signer = signer
        self._invalid = unreadable.Counter()
        addresses = broker_addresses(settings.mqtt_url)
        self._keepalive = settings.keepalive
        self.client_id = controller_client_id(settings)
        self._share = settings.shared_subscription_group
        self._client = create_client(
            addresses[0],
            client_id=self.client_id,
            # Measured (docs/architecture.md#measured-facts): Mosquitto keeps handing a shared
            # subscription's messages to a member whose persistent session outlived it.
            clean_session=self._share is not None,
            ca_file=settings.mqtt_ca_file,
            reconnect_min_delay=settings.reconnect_min_delay,
            reconnect_max_delay=settings.reconnect_max_delay,
        )
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._failover = Failover(self._client, addresses, self._keepalive, min_delay=settings.reconnect_min_delay,
                                  max_delay=settings.reconnect_max_delay)
        self._subscriber = SubscriptionKeeper(
            self._client, self.subscriptions(), log,
            on_granted=lambda: log.debug("subscribed to the device topics"),
            min_delay=settings.reconnect_min_delay, max_delay=settings.reconnect_max_delay,
        )
        self._acks = AckTracker()
        self._own = RecentIds(OWN_TASK_MEMORY)
        self._connected = threading.Event()
        self._link = LinkWatch()
        self._failures = ConnectFailureLog(addresses[0], settings.mqtt_ca_file, log)
        self._stopping = False
        self._writer = IngestWriter(sessions, self._redispatch, committed=committed)
        self._connects = 0  # successful CONNECTs since start

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho keeps retrying until the broker answers."""
        log.info("connecting to the MQTT broker at %s", ", ".join(map(str, self._failover.addresses)))
        self._writer.start()
        self._status_gate.start()
        self._failover.start()
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self._failover.stop()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._status_gate.stop()
        self._status_gate.flush()  # a held status is the device's latest: record it
        self._writer.stop()  # records what was already taken off the socket

    @property
    def ingest(self) -> IngestStats:
        """The ingest queue's length, high-water mark and counters (for /healthz)."""
        return self._writer.stats()

    @property
    def connected(self) -> bool:
        """Connected and subscribed to every device topic (not deaf: /healthz says degraded until then)."""
        return self._connected.is_set() and self._subscriber.granted

    @property
    def link_problem(self) -> str | None:
        """Why the broker link cannot be trusted although it may be up right now (it keeps dropping)."""
        return self._link.problem(self.client_id)

    @property
    def recent_disconnects(self) -> int:
        return self._link.recent()

    @property
    def disconnects(self) -> int:
        """Times the broker link dropped since start (the controller's own stop not counted)."""
        return self._link.total

    @property
    def reconnects(self) -> int:
        """Times the controller connected to a broker again after its first connection."""
        return max(0, self._connects - 1)

    def on_task_finished(self, hook: Callable[[list[Finished]], None]) -> None:
        """Call `hook` (in the ingest writer's thread) with the tasks each committed ingest batch ended."""
        self._writer.finished_hooks.append(hook)

    def subscriptions(self) -> list[tuple[str, int]]:
        """What the controller subscribes to: everything, or with a shared subscription group
        its share of results, heartbeats and task topics (statuses still all: they are few,
        retained, and every controller keeps presence current)."""
        shared = [(ALL_RESULTS, QOS), (ALL_HEARTBEATS, 0), (ALL_TASKS, QOS), (ALL_CONFIG_REPORTED, QOS)]
        if self._share is not None:
            shared = [(f"$share/{self._share}/{topic}", qos) for topic, qos in shared]
        return [(ALL_STATUS, QOS), *shared]

    def encode(self, model: BaseModel, topic: str = SIZE_PROBE_TOPIC) -> bytes:
        """`model` as it goes on the wire to `topic`: JSON, signed for that topic when tasks are signed."""
        if self._signer is not None and isinstance(model, TaskEnvelope):
            model = self._signer.sign(model, topic)
        return model.model_dump_json(exclude_none=True).encode()

    def publish(self, topic: str, model: BaseModel, task_ids: Sequence[str] = ()) -> bool:
        """Publish `model` (QoS 1, not retained); True when paho accepted it for sending now
        (False: not connected; paho sends it after reconnecting). The tasks in `task_ids` are
        recorded as dispatched when the broker acknowledges the message; this never waits for that."""
        if isinstance(model, TaskEnvelope) and model.id is not None:
            self._own.add(model.id)  # before the publish: the broker may echo it back at once
        info = self._client.publish(topic, self.encode(model, topic), qos=QOS, retain=False)
        already = self._acks.sent(info.mid, task_ids)
        if already:
            self._writer.put(Incoming("", Acked(already)))
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def clear_retained(self, topic: str, again_after: Sequence[float] = CLEAR_AGAIN) -> bool:
        """Delete the broker's retained message on `topic` (an empty retained publish, QoS 1): a
        deleted device's status (docs/architecture.md#housekeeping). Cleared again `again_after`
        seconds later: the broker drops the revoked device once it reloaded its files, and may
        publish its retained will then. True when paho accepted the first publish."""
        for delay in again_after:
            timer = threading.Timer(delay, self._client.publish, (topic, b""), {"qos": QOS, "retain": True})
            timer.daemon = True
            timer.start()
        info = self._client.publish(topic, b"", qos=QOS, retain=True)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # ---- paho callbacks (network thread) ---------------------------------------------------

    def publish_retained(self, topic: str, model: BaseModel) -> bool:
        """Publish `model` QoS 1 and retained: a device's desired config, never a task."""
        if is_task_topic(topic):
            raise ValueError(f"{topic} is a task topic: task topics never carry retained messages")
        info = self._client.publish(topic, model.model_dump_json(exclude_none=True).encode(), qos=QOS, retain=True)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, _properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("the MQTT broker at %s refused the connection: %s", self._failover.address, reason)
            return
        self._writer.put(RECONNECTED)
        self._connects += 1
        self._failures.connected()
        self._failover.connected()
        self._subscriber.connected()
        self._connected.set()
        log.info("connected to the MQTT broker at %s as %s (session present: %s)", self._failover.address, self.client_id,
                 flags.session_present)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self._failures.failed(self._failover.address)
        self._failover.down()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, codes: list[ReasonCode], _props: Any) -> None:
        self._subscriber.suback(mid, codes)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _properties: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._subscriber.disconnected()
        address = self._failover.address
        self._failover.down()
        if was_connected and not self._stopping:
            self._link.dropped()
            log.warning("disconnected from the MQTT broker at %s (%s); reconnecting to %s", address, reason,
                        self._failover.address)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: ReasonCode, _properties: Any) -> None:
        """The broker acknowledged a publish: queue its tasks for the writer (no SQL here)."""
        try:
            task_ids = self._acks.acked(mid)
            if task_ids:
                self._writer.put(Incoming("", Acked(task_ids)))
        except Exception:
            log.exception("failed to record the broker's ack of message %d", mid)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An exception escaping a paho callback would stop the network thread: catch them all.
        try:
            self._route(message.topic, message.payload)
        except Exception:
            log.exception("failed to handle a message on %s; it was dropped", message.topic)

    # ---- routing ---------------------------------------------------------------------------

    def _route(self, topic: str, payload: bytes | bytearray) -> None:
        reporter = parse_config_reported_topic(topic)
        if reporter is not None:
            self._config_report(reporter, payload)
            return
        parsed = parse_device_topic(topic)
        if parsed is None or not payload:
            return  # not a device topic, or a cleared retained status
        if len(payload) > self.max_payload_bytes:
            log.warning("dropped a %d-byte message on %s: larger than max_payload_bytes", len(payload), topic)
            self._unreadable(parsed.device_id, parsed.channel, payload, "larger than FLEET_MAX_PAYLOAD_BYTES")
            return
        if parsed.channel == "tasks":
            self._handle_task(parsed.device_id, payload)
            return
        # Per-device limits come before validation: a flood costs a dict lookup per message.
        if parsed.channel == "status":
            self._status_gate.offer(parsed.device_id, payload)  # → `_accept` now, or once its budget refills
            return
        if not self._throttle.allow(parsed.device_id):
            self._flood.add()
            self._flood.noticed("results", parsed.device_id, "device %s sends more results and heartbeats than "
                                "FLEET_DEVICE_MESSAGE_RATE allows: its excess messages are dropped", parsed.device_id)
            return
        self._accept(parsed.device_id, parsed.channel, payload)

    def _accept(self, device_id: str, channel: str, payload: bytes | bytearray) -> None:
        """Validate a message within its device's limits and queue it for the ingest writer."""
        topic = f"devices/{device_id}/{channel}"
        model, what = _PAYLOADS[channel]
        try:
            message = model.model_validate_json(payload)
        except ValidationError as exc:
            reason = describe_validation_error(exc, limit=1, empty="payload")
            log.warning("dropped an invalid %s on %s: %s", what, topic, reason)
            self._unreadable(device_id, channel, payload, reason)
            return
        assert isinstance(message, DeviceStatus | Heartbeat | TaskEvent)
        self._writer.put(Incoming(device_id, message))

    def _config_report(self, device_id: str, payload: bytes | bytearray) -> None:
        """A device's reported config: validated and queued like a result (no SQL here)."""
        if not payload or len(payload) > self.max_payload_bytes or not self._throttle.allow(device_id):
            return
        try:
            report = ReportedConfig.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("dropped an invalid config report on devices/%s/config/reported: %s", device_id,
                        describe_validation_error(exc, limit=1, empty="payload"))
            self._invalid.add()
            return
        self._writer.put(Incoming(device_id, report))

    @property
    def invalid_messages(self) -> int:
        """Device messages dropped since start because they could not be read."""
        return self._invalid.value

    @property
    def throttled_messages(self) -> int:
        """Device messages dropped since start because their device went over its limits."""
        return self._flood.count

    def _unreadable(self, device_id: str, channel: str, payload: bytes | bytearray, reason: str) -> None:
        """Count a dropped message; an unreadable result that may have ended a task fails it."""
        self._invalid.add()
        found = unreadable.salvage(payload) if channel == "results" else None
        if found is not None and found.ends_task:
            self._writer.put(Incoming(device_id, Unreadable(found, reason)))

    def _handle_task(self, device_id: str, payload: bytes | bytearray) -> None:
        """A task on a device's topic (the controller's own, or an operator's): recorded when its
        device is not online, so it runs on the device's next birth (`services.adhoc`)."""
        try:
            envelope = TaskEnvelope.model_validate_json(payload)
        except ValidationError:
            return  # an online device rejects it and reports that; an offline one never sees it
        if envelope.id is not None and self._own.take(envelope.id):
            return  # our own publish coming back: the task is already in SQL
        self._writer.put(Incoming(device_id, envelope))

    # ---- follow-ups (the ingest writer's thread, after its batch committed) -------------------

    def _redispatch(self, device_ids: list[str]) -> None:
        """Devices were born (or first seen since a reconnect): publish their unfinished tasks again."""
        with self._sessions() as session:
            task_control.redispatch_births(session, device_ids, self)
        with self._sessions() as session:
            groups.after_births(session, device_ids, self._settings, self)
