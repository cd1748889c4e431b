"""The in-process event bus behind the push stream (`GET /api/v1/events/stream`).

Producers (the ingest writer, the sweeper, REST routes) call `LiveBus.publish` from any thread,
always AFTER their SQL transaction committed; it never blocks and never raises: with nobody
subscribed it returns at once, else it hands the events to the event loop in one
`call_soon_threadsafe`. There each subscriber whose filter matches gets them in its own bounded
queue. A subscriber that reads too slowly never slows a producer: once its queue is full,
further events are dropped FOR IT and counted, and when it has read what was queued it gets one
`dropped` event saying how many it missed (then it should refetch the state it shows).

See docs/architecture.md#push-stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from schemas.live import ALWAYS_SENT, Dropped, LiveEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamFilter:
    """Which events a subscriber wants: empty sets mean all."""

    kinds: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()

    def matches(self, event: LiveEvent) -> bool:
        if event.kind in ALWAYS_SENT:
            return True
        if self.kinds and event.kind not in self.kinds:
            return False
        device_id = getattr(event, "device_id", None)
        if self.devices and device_id not in self.devices:
            return False
        task_id = getattr(event, "task_id", None)
        return not self.tasks or task_id in self.tasks


@dataclass(eq=False)
class Subscription:
    """One reader of the bus (one stream connection)."""

    filter: StreamFilter
    limit: int
    queue: asyncio.Queue[LiveEvent] = field(init=False)
    dropped: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.limit)

    def offer(self, event: LiveEvent) -> None:
        """Queue `event` if it matches and there is room; else count it as dropped (event loop)."""
        if self.closed or not self.filter.matches(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def close(self) -> None:
        """End this subscription: `next` answers None once the queued events were read."""
        self.closed = True
        try:
            self.queue.put_nowait(_CLOSE)
        except asyncio.QueueFull:
            pass  # the reader is busy with a full queue: it finds `closed` once that is read

    async def next(self) -> LiveEvent | None:
        """The next event: what was queued, then a `dropped` notice if any were left out; None
        once the bus closed."""
        if self.queue.empty():
            if self.dropped:
                count, self.dropped = self.dropped, 0
                return Dropped(count=count)
            if self.closed:
                return None
        event = await self.queue.get()
        return None if event is _CLOSE else event


_CLOSE: LiveEvent = Dropped(count=1)  # a wake-up put into each queue at close; never delivered


class LiveBus:
    """Fan-out of live events to the subscribers of this process (see the module docstring)."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0  # events handed to the loop (for tests and metrics)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, stream_filter: StreamFilter) -> Subscription:
        """A new subscription (call in the event loop that serves it)."""
        subscription = Subscription(stream_filter, self.queue_size)
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def publish(self, events: Iterable[LiveEvent]) -> None:
        """Hand `events` to every matching subscriber; from any thread, never blocks or raises."""
        if not self._subscribers:
            return
        batch = list(events)
        loop = self._loop
        if not batch or loop is None or loop.is_closed():
            return
        try:
            if _in_loop(loop):
                self._fan_out(batch)
            else:
                loop.call_soon_threadsafe(self._fan_out, batch)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            return
        self.published += len(batch)

    def _fan_out(self, batch: Sequence[LiveEvent]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            for event in batch:
                subscription.offer(event)

    def close(self) -> None:
        """End every subscription (controller shutdown): their streams finish."""
        with self._lock:
            subscribers, self._subscribers = list(self._subscribers), set()
        for subscription in subscribers:
            subscription.close()


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
