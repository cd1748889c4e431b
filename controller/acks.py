"""Which task ids each PUBLISH of the controller carries, until the broker acknowledges it.

A task counts as dispatched only once the broker sent its PUBACK
(docs/architecture.md#promise-8-the-promises-hold-at-fleet-size). paho names a publish by its
message id (mid) and calls `on_publish(mid)` in its network thread when the PUBACK arrives,
which may be before `publish()` has returned the mid to its caller: an ack seen before its
publish was registered is kept (briefly) and handed to the publisher when it registers.
Neither side ever waits for the other while holding paho's locks, so no deadlock is possible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

EARLY_ACK_TTL = 10.0  # seconds an ack of a not yet registered mid is kept (registration follows within microseconds)


class AckTracker:
    """mid → the task ids its message carries; thread-safe, never blocks for long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, ...]] = {}
        self._early: dict[int, float] = {}  # mid → when its ack arrived unregistered

    def sent(self, mid: int, task_ids: Sequence[str]) -> tuple[str, ...]:
        """Register a publish (every one, with or without tasks). Returns its task ids when the
        broker already acknowledged it (the caller records them), else ()."""
        ids = tuple(task_ids)
        with self._lock:
            if self._early.pop(mid, None) is not None:
                return ids
            self._pending[mid] = ids  # a mid reused after 65,535 publishes replaces a message never acked
            return ()

    def acked(self, mid: int) -> tuple[str, ...]:
        """The broker acknowledged `mid`: the task ids it carried (() if none, or not registered yet)."""
        with self._lock:
            ids = self._pending.pop(mid, None)
            if ids is not None:
                return ids
            now = time.monotonic()
            if len(self._early) > 100:
                self._early = {m: t for m, t in self._early.items() if now - t < EARLY_ACK_TTL}
            self._early[mid] = now
            return ()

    @property
    def in_flight(self) -> int:
        """Publishes not acknowledged yet."""
        with self._lock:
            return len(self._pending)
