"""Per-device token buckets: a device that floods its results topic is slowed down (its excess
messages are dropped and it is logged once), the rest of the fleet is not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class DeviceThrottle:
    """Allows each device `rate` messages per second on average, in bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # device → (tokens, last refill)
        self._lock = threading.Lock()

    def allow(self, device_id: str) -> bool:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(device_id, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            allowed = tokens >= 1
            self._buckets[device_id] = (tokens - 1 if allowed else tokens, now)
        return allowed
