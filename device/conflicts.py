"""Noticing that another daemon uses this device's id, and giving way instead of fighting.

Two daemons with one client id take turns: each connection makes the broker drop the other,
which reconnects at once and drops the first. A contested connect is one where the daemon
found another daemon's retained status (its birth, or the will the broker published when it
was dropped) on its own status topic, and was then dropped itself within `DROPPED_WITHIN`
seconds. (One such connect is normal: a PC that lost power and came back takes over its old
session.) After `THRESHOLD` contested connects within `WINDOW` seconds the daemon reports the
conflict and waits `FIRST_PAUSE` seconds (then twice as long each time) before reconnecting,
so the other daemon stays connected and the fleet sees a stable device plus an error naming
both hosts, not a loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 60.0
DROPPED_WITHIN = 30.0
THRESHOLD = 3
FIRST_PAUSE = 60.0
MAX_PAUSE = 3600.0


class DuplicateIdGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._contested: deque[float] = deque()
        self.pause = 0.0  # seconds to wait before reconnecting; 0 while no conflict is known

    def contested(self) -> float | None:
        """Record a contested connect; the new pause once the conflict is certain (it doubles
        with each further contested connect), else None."""
        now = self._clock()
        self._contested.append(now)
        while self._contested and self._contested[0] < now - WINDOW:
            self._contested.popleft()
        if self.pause:
            self.pause = min(self.pause * 2, MAX_PAUSE)
            return self.pause
        if len(self._contested) >= THRESHOLD:
            self.pause = FIRST_PAUSE
            return self.pause
        return None

    def reset(self) -> None:
        """The conflict is over (the connection stayed up long enough)."""
        self._contested.clear()
        self.pause = 0.0
