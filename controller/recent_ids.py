"""A bounded, thread-safe memory of recent ids: the controller's own task publishes, so that
their echo on `devices/+/tasks` (the controller subscribes to hear operators' hand-written
tasks) is dropped in paho's thread instead of costing the ingest writer a transaction. An id
forgotten under load only means the echo is recorded the slow way (`services.adhoc` finds the
task already stored and ignores it)."""

from __future__ import annotations

import threading


class RecentIds:
    """The last `size` ids added, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: dict[str, None] = {}  # insertion-ordered
        self._lock = threading.Lock()

    def add(self, item: str) -> None:
        with self._lock:
            self._ids.pop(item, None)
            self._ids[item] = None
            if len(self._ids) > self._size:
                del self._ids[next(iter(self._ids))]

    def take(self, item: str) -> bool:
        """Whether `item` was added (and not yet taken or forgotten); it is forgotten now."""
        with self._lock:
            return self._ids.pop(item, False) is None
