"""The ingest path: device messages recorded in batches by one writer thread.

paho's network thread only parses, validates and `put`s what it read (no SQL), so the
controller takes messages off the socket at the broker's pace and the broker never has to
queue (or drop) them for it. `IngestWriter` drains the queue in arrival order: up to
`max_batch` messages, whatever is queued when the writer gets to them (plus, when `max_wait`
is set, what arrives within `max_wait` seconds of the first), are recorded in ONE
transaction. By default it does not wait: a lone message is recorded at once, and under load
the messages that arrive while one batch commits make up the next one. Heartbeats of a batch
become one read and one executemany UPDATE (the latest heartbeat per device). Heartbeats skip
the queue: they are held (the latest per device) and written `HEARTBEAT_FLUSH` seconds after
the first, with the batch in progress, so an idle fleet costs one transaction a second and a
backlog of results never delays presence (10,000 results queued once got 1,580 connected
devices taken for silent); a will or shutdown status writes its device's held heartbeat
before itself, so a heartbeat never revives a device that went offline after it.
The broker's acks of task messages
(`Acked`, queued by the on_publish callback) become one UPDATE that marks their tasks
dispatched. Work that must follow a commit (re-dispatching a device's
pending tasks on its birth, for all births of the batch together) runs after the batch
committed.

Why a thread and not asyncio: the services are sync SQLAlchemy, shared with the REST routes
(FastAPI's threadpool); one dedicated thread keeps them as they are and makes the order of
writes the order of arrival, so a birth is recorded before that device's results and a
task's events in the order they came. See docs/architecture.md#ingest.

The queue is unbounded on purpose: blocking paho's thread would only move the queue to the
broker, which drops messages when its own queue is full. Past `warn_at` queued messages a
warning is logged (at most every `WARN_EVERY` seconds) and /healthz shows the length and its
high-water mark; nothing is ever dropped here (`dropped` stays 0).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller import unborn
from controller.services import adhoc, devices, event_batch, finished, fleet_config, tasks, unreadable
from schemas.common import utcnow
from schemas.config_sync import ReportedConfig
from schemas.events import TaskEvent
from schemas.status import DeviceStatus, Heartbeat
from schemas.tasks import TaskEnvelope

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_WAIT = 0.0  # seconds a batch waits for more messages after its first one (see the module docstring)
# Seconds a heartbeat may wait to be written together with others. An idle fleet's heartbeats
# arrive one by one (10,000 devices every 30 s: 333/s), and one transaction each kept a core
# busy; held, they become one transaction a second. Presence judges silence over 3 intervals.
HEARTBEAT_FLUSH = 1.0
REHOLD_FOR = 60.0  # seconds a heartbeat whose session's birth is not recorded yet is kept trying
# (a session that keeps heartbeating without its birth counts as born: `controller.unborn`)
WARN_AT = 5_000  # queued messages past which the writer is said to be behind
WARN_EVERY = 10.0  # seconds between two "behind" warnings
WRITE_TRIES = 3  # of a message recorded alone, when a concurrent transaction got in its way


@dataclass(frozen=True)
class Unreadable:
    """A result the controller could not read, of which a task id could still be salvaged."""

    found: unreadable.Salvage
    reason: str


@dataclass(frozen=True)
class Acked:
    """The broker acknowledged a message of the controller that carried these tasks."""

    task_ids: tuple[str, ...]


Payload = DeviceStatus | Heartbeat | TaskEvent | TaskEnvelope | Unreadable | Acked | ReportedConfig | None


@dataclass(frozen=True)
class Incoming:
    """One message from `devices/<device_id>/…`, already validated; `payload` None marks a
    (re)connect of the controller to the broker."""

    device_id: str
    payload: Payload


RECONNECTED = Incoming("", None)
_STOP = object()
_WAKE = object()  # wakes a writer that waits with no deadline: a heartbeat is now held


@dataclass
class _Batch:
    """What staging a batch decided, applied only once it committed."""

    seen: set[str]
    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)
    births: list[str] = field(default_factory=list)
    presence: devices.PresenceCache | None = None  # the batch's devices, read once
    held: dict[str, Heartbeat] = field(default_factory=dict)  # held heartbeats written with this batch
    unmatched: set[str] = field(default_factory=set)  # held ones whose session was not (yet) current
    acked: list[str] = field(default_factory=list)
    events: list[tuple[str, TaskEvent]] = field(default_factory=list)  # task events not staged yet


@dataclass
class IngestStats:
    queue: int
    high_water: int
    dropped: int
    batches: int
    messages: int


class IngestWriter:
    """Records queued device messages in batches, in a thread of its own."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        redispatch: Callable[[list[str]], None],
        *,
        max_batch: int = MAX_BATCH,
        max_wait: float = MAX_WAIT,
        warn_at: int = WARN_AT,
        heartbeat_flush: float = HEARTBEAT_FLUSH,
        committed: Callable[[list[object]], None] | None = None,
    ) -> None:
        """`committed`, when given, is called (in the writer thread) with the payloads of each
        batch once it was recorded: the live stream's feed (`controller.live_feed.IngestFeed`)."""
        self._sessions = sessions
        self._committed = committed
        self._redispatch = redispatch
        self._max_batch, self._max_wait, self._warn_at = max_batch, max_wait, warn_at
        self._heartbeat_flush = heartbeat_flush
        # Heartbeats skip the queue: held here (the latest per device) and written at most
        # `heartbeat_flush` seconds after the first, even while a backlog of results waits in
        # the queue, so a device is never taken for silent because its results came first.
        self._beats_lock = threading.Lock()
        self._beats: dict[str, Heartbeat] = {}
        self._beats_due: float | None = None  # when the held heartbeats must be written
        self._beats_received = 0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._high_water = 0
        self._last_warning = float("-inf")
        self._batches = self._messages = 0
        # Devices whose status arrived since the last (re)connect: the first one per device
        # re-dispatches its pending tasks even when the session is not new, which covers
        # tasks committed but never published before a controller or broker restart.
        self._seen: set[str] = set()
        self._unborn = unborn.UnbornSessions()
        # Told, after each commit, the tasks it ended (the task duration histogram of /metrics).
        self.finished_hooks: list[finished.Hook] = []

    # ---- producer side (paho's network thread): never any SQL --------------------------------

    def put(self, item: Incoming) -> None:
        if isinstance(item.payload, Heartbeat):
            self._hold(item)
            return
        self._queue.put(item)
        length = self._queue.qsize()
        if length > self._high_water:
            self._high_water = length
        if length >= self._warn_at:
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY:
                self._last_warning = now
                log.warning("%d device messages wait to be recorded: the database writer is behind "
                            "(nothing is dropped; /healthz shows ingest_queue)", length)

    def stats(self) -> IngestStats:
        return IngestStats(self._queue.qsize(), self._high_water, 0, self._batches,
                           self._messages + self._beats_received)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Record everything queued so far, then end the thread (call after the MQTT client stopped)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the ingest writer did not finish within %.0f s; %d messages were not recorded",
                        timeout, self._queue.qsize())
        self._thread = None

    # ---- consumer side (the writer thread) ---------------------------------------------------

    def _run(self) -> None:
        running = True
        while running:
            batch, running = self._take()
            if batch or not running or self._beats_fell_due():
                try:
                    self.write(batch, final=not running)
                except Exception:  # never let the writer die: the next batch may well succeed
                    log.exception("failed to record a batch of %d device messages", len(batch))

    def _take(self) -> tuple[list[Incoming], bool]:
        """The next batch (empty when held heartbeats fell due), and False once the stop marker
        was reached."""
        while True:
            with self._beats_lock:
                due = self._beats_due
            try:
                first = self._queue.get(timeout=None if due is None else max(0.0, due - time.monotonic()))
            except queue.Empty:
                return [], True
            if first is not _WAKE:
                break
        if first is _STOP:
            return [], False
        assert isinstance(first, Incoming)
        batch = [first]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            wait = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, False
            if item is not _WAKE:
                assert isinstance(item, Incoming)
                batch.append(item)
        return batch, True

    def write(self, batch: list[Incoming], *, final: bool = False) -> None:
        """Record `batch` in one transaction, then run its follow-ups. If the transaction fails,
        each message is recorded alone, so one bad message loses nothing but itself.

        The held heartbeats are written with it once they fell due (or when `final`), after its
        births; an offline status writes its own device's held heartbeat just before itself."""
        flush = final or self._beats_fell_due()
        if not batch and not flush:
            return
        held = self._take_held() if flush else {}
        state = _Batch(seen=set(self._seen), held=dict(held))
        try:
            with self._sessions() as session:
                statuses = [item.device_id for item in batch if isinstance(item.payload, DeviceStatus)]
                if statuses:
                    state.presence = devices.preload_presence(session, statuses)
                for item in batch:
                    self._stage(session, item, state)
                _stage_events(session, state)
                devices.stage_heartbeats(session, state.heartbeats)
                state.unmatched = devices.stage_heartbeats(session, state.held)
                tasks.stage_acked(session, state.acked)
                session.commit()
                finished.tell(self.finished_hooks, session)
        except Exception as exc:
            log.warning("recording a batch of %d device messages failed (%s); recording them one by one",
                        len(batch), _first_line(exc))
            state = _Batch(seen=set(self._seen))
            for item in [*(Incoming(device_id, beat) for device_id, beat in held.items()), *batch]:
                self._write_one(item, state)
        self._seen = state.seen
        self._batches += 1
        self._messages += len(batch)
        born = self._unborn.note(held, state.unmatched)
        self._hold_again({device_id: held[device_id] for device_id in state.unmatched - born.keys()})
        births = state.births + self._record_unborn(born)
        if births:
            self._follow_up(births)
        if self._committed is not None:
            self._committed([*(item.payload for item in batch), *held.values()])

    def _record_unborn(self, born: dict[str, Heartbeat]) -> list[str]:
        """Births of sessions heard only through their heartbeats (`controller.unborn`)."""
        if not born:
            return []
        try:
            with self._sessions() as session:
                unborn.stage_births(session, born)
                session.commit()
        except Exception as exc:
            log.warning("recording the births of %d device(s) from their heartbeats failed: %s", len(born), _first_line(exc))
            return []
        return list(born)

    def _hold(self, item: Incoming, count: bool = True) -> None:
        """Keep a heartbeat until the held ones fall due (paho's thread; no SQL)."""
        assert isinstance(item.payload, Heartbeat)
        with self._beats_lock:
            self._beats[item.device_id] = item.payload
            self._beats_received += count
            first = self._beats_due is None
            if first:
                self._beats_due = time.monotonic() + self._heartbeat_flush
        if first:
            self._queue.put(_WAKE)

    def _hold_again(self, beats: dict[str, Heartbeat]) -> None:
        """Hold again, up to REHOLD_FOR seconds after they were sent, heartbeats whose session was
        not current when written: under a backlog, the birth of their session may still be queued."""
        recent = {device_id: beat for device_id, beat in beats.items()
                  if (utcnow() - beat.at).total_seconds() < REHOLD_FOR}
        for device_id, beat in recent.items():
            with self._beats_lock:
                if device_id in self._beats:
                    continue  # a newer one arrived meanwhile
            self._hold(Incoming(device_id, beat), count=False)

    def _take_held(self, device_id: str | None = None) -> dict[str, Heartbeat]:
        """All held heartbeats (and the deadline with them), or only `device_id`'s."""
        with self._beats_lock:
            if device_id is None:
                held, self._beats, self._beats_due = self._beats, {}, None
                return held
            beat = self._beats.pop(device_id, None)
            return {} if beat is None else {device_id: beat}

    def _beats_fell_due(self) -> bool:
        with self._beats_lock:
            return self._beats_due is not None and time.monotonic() >= self._beats_due

    def _write_one(self, item: Incoming, state: _Batch) -> None:
        """Record one message; tried again when another controller's transaction got in its
        way (a deadlock, a row it inserted at the same moment: docs/architecture.md#several-controllers)."""
        for attempt in range(1, WRITE_TRIES + 1):
            alone = _Batch(seen=set(state.seen))
            try:
                with self._sessions() as session:
                    self._stage(session, item, alone)
                    _stage_events(session, alone)
                    devices.stage_heartbeats(session, alone.heartbeats)
                    tasks.stage_acked(session, alone.acked)
                    session.commit()
                    finished.tell(self.finished_hooks, session)
                break
            except (OperationalError, IntegrityError) as exc:
                if attempt < WRITE_TRIES:
                    continue
                failure: Exception = exc
            except Exception as exc:
                failure = exc
            log.warning("dropped a %s from device %s that cannot be recorded: %s",
                        type(item.payload).__name__, item.device_id or "-", _first_line(failure))
            return
        state.seen = alone.seen
        state.births.extend(alone.births)

    def _stage(self, session: Session, item: Incoming, state: _Batch) -> None:
        payload, device_id = item.payload, item.device_id
        if isinstance(payload, TaskEvent):  # staged together, before the next message that writes
            state.events.append((device_id, payload))
            return
        if isinstance(payload, DeviceStatus | TaskEnvelope | Unreadable):
            _stage_events(session, state)
        if payload is None:
            state.seen.clear()
        elif isinstance(payload, Heartbeat):
            state.heartbeats[device_id] = payload
        elif isinstance(payload, DeviceStatus):
            beat = state.heartbeats.pop(device_id, None)
            beats = {} if beat is None else {device_id: beat}
            if payload.state == "offline":  # a held heartbeat never outlives its will: written first
                held = state.held.pop(device_id, None)
                beats |= ({} if held is None else {device_id: held}) | self._take_held(device_id)
            if beats:  # a heartbeat that came before this birth or will is recorded before it
                devices.stage_heartbeats(session, beats)
            new_session = devices.stage_status(session, device_id, payload, state.presence)
            first_seen = payload.device_id == device_id and payload.state == "online" and device_id not in state.seen
            if first_seen:
                state.seen.add(device_id)
            if new_session or first_seen:
                state.births.append(device_id)
        elif isinstance(payload, TaskEnvelope):
            adhoc.stage_published(session, device_id, payload)
        elif isinstance(payload, Acked):
            state.acked.extend(payload.task_ids)
        elif isinstance(payload, ReportedConfig):
            fleet_config.stage_reported(session, device_id, payload)
        else:
            unreadable.stage_fail(session, device_id, payload.found, payload.reason)

    def _follow_up(self, device_ids: list[str]) -> None:
        """Re-dispatch for every birth of the batch at once: at fleet scale most born devices have
        nothing pending, and one query finds the few that do (one transaction per birth took 10–30 ms
        each, and held SQLite's write lock from REST, when 300 devices connected together)."""
        try:
            self._redispatch(device_ids)
        except Exception:
            log.exception("failed to re-dispatch the pending tasks of %d device(s)", len(device_ids))


def _stage_events(session: Session, state: _Batch) -> None:
    """The task events staged so far in one go (`event_batch`): consecutive events cost a few
    statements together rather than an ORM round trip each."""
    if state.events:
        events, state.events = state.events, []
        event_batch.stage_events(session, events)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
