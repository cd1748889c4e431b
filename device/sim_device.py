"""One simulated device of `fleet simulate`: an aiomqtt connection speaking the daemon's wire contract.

Per connection attempt a new session id `<boot id>-<n>` and a retained will (`offline`,
`connection lost`); after CONNACK it subscribes to its own task topic, the broadcast topic, its
groups' topics and its own status topic, and only after the SUBACK publishes its retained
birth. Heartbeats (QoS 0) every `heartbeat` seconds, with a random first delay so a fleet's
heartbeats are spread over the interval. A task is claimed in the in-memory journal, then
`accepted`, `started` and, after its duration, `succeeded` (or `failed` at the failure rate)
are published in order (QoS 1). A stale `offline` on its status topic is answered with a new
birth, once per session, like the daemon. A lost connection is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt
from pydantic import ValidationError

from device.sim_intake import SimCancel, SimReject, SimTask, read_sim_task
from device.sim_journal import Claim, MemoryJournal, run_key
from schemas.common import utcnow
from schemas.config_sync import DesiredConfig, ReportedConfig, decide
from schemas.errors import WireErrorCode
from schemas.events import EventKind, TaskError, TaskEvent, TaskSummary
from schemas.status import DeviceFacts, DeviceStatus, Heartbeat
from schemas.tasks import SleepParams
from schemas.topics import (
    BROADCAST_TASKS,
    device_config,
    device_config_reported,
    device_heartbeat,
    device_results,
    device_status,
    device_tasks,
    group_tasks,
)

SIM_REMOTE_SETTINGS = ("heartbeat_interval",)
"""What a simulated device applies of the remote settings (the rest it reports rejected)."""

log = logging.getLogger(__name__)

QOS = 1
PUBLISH_TIMEOUT = 60.0  # seconds an aiomqtt call may wait for its acknowledgement under load
MISC_INTERVAL = 2.0  # seconds between paho's keepalive checks on each connection


class _Client(aiomqtt.Client):
    """aiomqtt's client with a slower housekeeping timer.

    aiomqtt wakes every connection once a second to let paho send keepalive pings; 10,000
    simulated devices made that 10,000 wake-ups a second, most of the simulator's idle CPU.
    Every `MISC_INTERVAL` seconds is enough for the keepalives a fleet allows (5 s and more).
    """

    async def _misc_loop(self) -> None:
        while self._client.loop_misc() == 0:
            await asyncio.sleep(MISC_INTERVAL)


@dataclass(frozen=True)
class SimConfig:
    """What every device of one simulated fleet shares."""

    host: str
    port: int
    facts: DeviceFacts
    heartbeat: float
    task_seconds: float
    failure_rate: float
    keepalive: int
    max_payload_bytes: int
    rng: random.Random
    connect_options: dict[str, Any]  # username, password, tls_context, transport, socket_options…
    more_brokers: tuple[tuple[str, int], ...] = ()  # other nodes of a clustered broker, tried in turn after host:port


class SimCounters:
    """Fleet-wide counters, updated on the event loop by every simulated device."""

    def __init__(self) -> None:
        self.online = 0  # devices connected and born right now
        self.births = 0
        self.connection_losses = 0
        self.connect_failures = 0
        self.tasks_received = 0  # task messages, repeats and rejected ones included
        self.tasks_run = 0  # handler runs (a repeated id never adds one)
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0
        self.duplicates_answered = 0  # repeats of a finished id answered from the journal
        self.duplicates_ignored = 0  # repeats of an id still running
        self.events_sent = 0  # task events acknowledged by the broker
        self.publish_errors = 0
        self.heartbeats_sent = 0
        self.last_birth_at = 0.0  # wall clock (time.time(), comparable across processes) of the latest birth
        self.last_error: str | None = None  # why the latest connection attempt failed

    def snapshot(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items() if isinstance(value, int)}


class SimulatedDevice:
    """One device: its own connection, session ids, journal and tasks."""

    def __init__(self, device_id: str, config: SimConfig, counters: SimCounters) -> None:
        self.device_id = device_id
        self.journal = MemoryJournal()
        self.born = asyncio.Event()
        self._config = config
        self._counters = counters
        self._facts = config.facts.model_copy(update={"name": device_id})
        self._boot_id = secrets.token_hex(4)
        self._session = 0
        self._reborn = False
        self._client: aiomqtt.Client | None = None
        self._own_tasks = device_tasks(device_id)
        self._status_topic = device_status(device_id)
        self._results_topic = device_results(device_id)
        # Group topics come from the controller's desired config (devices/<id>/config), not the facts.
        self._task_topics = {self._own_tasks, BROADCAST_TASKS}
        self._config_topic = device_config(device_id)
        self._group_topics: set[str] = set()
        self._heartbeat = config.heartbeat
        self._config_revision = 0
        self._running: dict[str, tuple[int, asyncio.Task[None]]] = {}  # task id → (attempt, its run)
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def session_id(self) -> str:
        return f"{self._boot_id}-{self._session}"

    # --- connection --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set (then publish the shutdown status) or cancelled."""
        delay = 1.0
        while not stop.is_set():
            try:
                await self._connect_and_serve(stop)
                delay = 1.0
            except aiomqtt.MqttError as exc:
                log.debug("%s: connection ended: %s", self.device_id, exc)
            if stop.is_set():
                return
            await asyncio.sleep(delay * (0.5 + self._config.rng.random()))
            delay = min(delay * 2, 30.0)

    async def _connect_and_serve(self, stop: asyncio.Event) -> None:
        self._session += 1
        self._reborn = False
        will = aiomqtt.Will(self._status_topic, self._status("offline", "connection lost"), qos=QOS, retain=True)
        brokers = [(self._config.host, self._config.port), *self._config.more_brokers]
        host, port = brokers[(self._session - 1) % len(brokers)]  # each attempt at the next node
        client = _Client(
            host, port, identifier=self.device_id, clean_session=True, will=will,
            keepalive=self._config.keepalive, timeout=PUBLISH_TIMEOUT, logger=log, **self._config.connect_options,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            self._counters.connect_failures += 1
            self._counters.last_error = str(exc)
            raise
        born = False
        try:
            self._client = client
            codes = await client.subscribe([(topic, QOS) for topic in [*sorted(self._task_topics), self._status_topic]])
            if any(getattr(code, "is_failure", code == 0x80) for code in codes):
                # Deaf: no birth. Reconnecting (after the backoff) subscribes again.
                raise aiomqtt.MqttError(f"{self.device_id}: the broker refused a subscription (check its ACL)")
            sent = time.time()
            await client.publish(self._status_topic, self._status("online"), qos=QOS, retain=True)
            born = True
            self._counters.last_birth_at = max(self._counters.last_birth_at, sent)
            self._counters.births += 1
            self._counters.online += 1
            self.born.set()
            # Not waited for by the birth (an ACL without it must not keep the device deaf).
            await client.subscribe([(topic, QOS) for topic in [self._config_topic, *sorted(self._group_topics)]])
            await self._serve(client, stop)
        finally:
            self._client = None
            if born:
                self._counters.online -= 1
            await self._close(client, graceful=stop.is_set())

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        beats = asyncio.create_task(self._heartbeats(client))
        stopped = asyncio.create_task(stop.wait())
        reader = asyncio.create_task(self._read(client))
        try:
            done, _ = await asyncio.wait([reader, stopped, beats], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped:
                    task.result()  # a lost connection raises MqttError here
        finally:
            for task in (beats, stopped, reader):
                task.cancel()
            await asyncio.gather(beats, stopped, reader, return_exceptions=True)

    async def _close(self, client: aiomqtt.Client, graceful: bool) -> None:
        if graceful:
            try:
                await client.publish(self._status_topic, self._status("offline", "shutdown"), qos=QOS, retain=True)
            except aiomqtt.MqttError:
                log.debug("%s: shutdown status not confirmed", self.device_id)
        else:
            self._counters.connection_losses += 1
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self._route(message.topic.value, payload, bool(message.retain))

    async def _heartbeats(self, client: aiomqtt.Client) -> None:
        await asyncio.sleep(self._heartbeat * self._config.rng.random())
        while True:
            beat = Heartbeat(device_id=self.device_id, session_id=self.session_id, at=utcnow(),
                             running=len(self._running))
            await client.publish(device_heartbeat(self.device_id), beat.model_dump_json().encode(), qos=0)
            self._counters.heartbeats_sent += 1
            await asyncio.sleep(self._heartbeat)

    def _status(self, state: Literal["online", "offline"], reason: str | None = None) -> bytes:
        status = DeviceStatus(
            device_id=self.device_id, state=state, session_id=self.session_id,
            at=None if reason == "connection lost" else utcnow(), reason=reason,
            facts=self._facts if state == "online" else None,
        )
        return status.model_dump_json(exclude_none=True).encode()

    # --- incoming messages ---------------------------------------------------------------------

    def _route(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic in self._task_topics or topic in self._group_topics:
            if payload:
                self._on_task(topic, payload, retained)
        elif topic == self._config_topic and payload:
            self._on_config(payload)
        elif topic == self._status_topic and not retained:
            self._on_status(payload)

    def _on_config(self, payload: bytes) -> None:
        """A desired config: its heartbeat interval and groups take effect; the other settings
        are reported rejected (a simulated device has no concurrency limit or log of its own)."""
        try:
            desired = DesiredConfig.model_validate_json(payload)
        except ValidationError:
            return
        if desired.device_id != self.device_id or desired.revision <= self._config_revision or self._client is None:
            return
        self._config_revision = desired.revision
        accepted, rejected = decide(desired.settings, list(SIM_REMOTE_SETTINGS))
        self._heartbeat = accepted.get("heartbeat_interval", self._config.heartbeat)
        wanted = {group_tasks(group) for group in desired.groups}
        self._spawn(self._apply_groups(self._client, wanted, ReportedConfig(
            device_id=self.device_id, revision=desired.revision, groups=sorted(desired.groups), applied=accepted,
            rejected=rejected, at=utcnow())))

    async def _apply_groups(self, client: aiomqtt.Client, wanted: set[str], report: ReportedConfig) -> None:
        removed, added = self._group_topics - wanted, wanted - self._group_topics
        self._group_topics = wanted
        if removed:
            await client.unsubscribe(sorted(removed))
        if added:
            await client.subscribe([(topic, QOS) for topic in sorted(added)])
        await client.publish(device_config_reported(self.device_id), report.model_dump_json().encode(), qos=QOS)

    def _on_status(self, payload: bytes) -> None:
        """A stale `offline` (another session's late will) overwrote our retained birth: re-announce."""
        try:
            status = DeviceStatus.model_validate_json(payload)
        except ValidationError:
            return
        if status.device_id != self.device_id or status.state != "offline" or status.session_id == self.session_id:
            return
        if not self._reborn and self._client is not None:
            self._reborn = True
            self._spawn(self._client.publish(self._status_topic, self._status("online"), qos=QOS, retain=True))

    def _on_task(self, topic: str, payload: bytes, retained: bool) -> None:
        self._counters.tasks_received += 1
        intake = read_sim_task(topic, payload, device_id=self.device_id, own_topic=self._own_tasks,
                               retained=retained, max_payload_bytes=self._config.max_payload_bytes)
        if isinstance(intake, SimReject):
            self._counters.rejected += 1
            error = TaskError(code=intake.code, message=intake.message)
            event = self._event(intake.task_id, 1, EventKind.REJECTED, seq=0, error=error, task=intake.summary)
            self._spawn(self._send(event))
        elif isinstance(intake, SimCancel):
            running = self._running.get(intake.target_id)
            if running is not None and intake.attempt in (None, running[0]):
                running[1].cancel()
        elif isinstance(intake, SimTask):
            self._submit(intake)

    def _submit(self, task: SimTask) -> None:
        attempt = task.envelope.attempt
        key = run_key(task.task_id, attempt)
        claim, recorded = self.journal.claim(key)
        if claim == Claim.FINAL:
            assert recorded is not None
            self._counters.duplicates_answered += 1
            replay = self._event(task.task_id, attempt, recorded.event, result=recorded.result, error=recorded.error,
                                 message=recorded.message, task=recorded.task or task.summary, replay=True)
            self._spawn(self._send(replay))
        elif claim == Claim.IN_PROGRESS:
            self._counters.duplicates_ignored += 1
        else:
            run = asyncio.create_task(self._run(task, key))
            self._running[task.task_id] = (attempt, run)
            run.add_done_callback(lambda _done: self._running.pop(task.task_id, None))

    # --- running a task ------------------------------------------------------------------------

    async def _run(self, task: SimTask, key: str) -> None:
        attempt, envelope = task.envelope.attempt, task.envelope
        await self._send(self._event(task.task_id, attempt, EventKind.ACCEPTED, task=task.summary))
        if envelope.expires_at is not None and envelope.expires_at <= utcnow():
            await self._finish(key, task, EventKind.EXPIRED, message="not started before it expired")
            return
        self.journal.mark_started(key)
        self._counters.tasks_run += 1
        await self._send(self._event(task.task_id, attempt, EventKind.STARTED))
        seconds = task.params.seconds if isinstance(task.params, SleepParams) else self._config.task_seconds
        try:
            if envelope.timeout is not None and seconds > envelope.timeout:
                await asyncio.sleep(envelope.timeout)
                await self._finish(key, task, EventKind.TIMED_OUT, message="ran longer than its timeout")
                return
            if seconds > 0:
                await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await self._finish(key, task, EventKind.CANCELED, message="canceled by request")
            return
        if self._config.failure_rate and self._config.rng.random() < self._config.failure_rate:
            self._counters.failed += 1
            error = TaskError(code=WireErrorCode.HANDLER_ERROR, message="simulated failure")
            await self._finish(key, task, EventKind.FAILED, error=error)
        else:
            self._counters.succeeded += 1
            await self._finish(key, task, EventKind.SUCCEEDED, result=_result(task))

    async def _finish(self, key: str, task: SimTask, kind: EventKind, **fields: Any) -> None:
        """Journal the final event, then publish it: a repeat is answered even if this publish is lost."""
        event = self._event(task.task_id, task.envelope.attempt, kind, **fields)
        self.journal.finish(key, event)
        await self._send(event)

    def _event(self, task_id: str, attempt: int, kind: EventKind, *, seq: int | None = None,
               task: TaskSummary | None = None, **fields: Any) -> TaskEvent:
        return TaskEvent(
            task_id=task_id, device_id=self.device_id, event=kind, attempt=attempt,
            seq=self.journal.next_seq(run_key(task_id, attempt)) if seq is None else seq,
            at=utcnow(), session_id=self.session_id, task=task, **fields,
        )

    async def _send(self, event: TaskEvent) -> None:
        client = self._client
        if client is None:
            self._counters.publish_errors += 1
            return
        try:
            await client.publish(self._results_topic, event.model_dump_json(exclude_none=True).encode(), qos=QOS)
            self._counters.events_sent += 1
        except aiomqtt.MqttError:
            self._counters.publish_errors += 1

    def _spawn(self, job: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _result(task: SimTask) -> dict[str, Any]:
    result: dict[str, Any] = {"simulated": True}
    params = task.params.model_dump(mode="json")
    if task.envelope.type == "echo":
        result.update(params)
    elif task.envelope.type == "sleep":
        result["slept"] = params["seconds"]
    return result

