"""Per-device limits on what a device may write, applied in paho's network thread before a
message is validated or queued, so one flooding login costs the controller next to nothing and
the rest of the fleet is not slowed down.

- Results and heartbeats share one token bucket per device (`FLEET_DEVICE_MESSAGE_RATE` /
  `_BURST`); past it they are dropped (the device's journal answers for a result when the
  task is asked for again).
- Status messages (births and wills) have a small bucket of their own
  (`FLEET_DEVICE_STATUS_RATE` / `_BURST`): a birth makes the controller re-send the device's
  unfinished tasks, so a flood of births is the costliest flood there is. Past the budget a
  status is *held*, not forwarded: `StatusGate` keeps the latest one per device (and the one
  before it, so a will can follow its own birth) and forwards it when the budget refills, so
  when a flood stops the controller shows the last status the device sent, as the broker's
  retained message does. Older held statuses are dropped.

Every drop is counted (`/healthz` `throttled_messages`) and logged once per device per
episode (`FloodLog`): again only after the device kept within its limits for a while.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError

from schemas.status import DeviceStatus

log = logging.getLogger(__name__)

Clock = Callable[[], float]
EPISODE_GAP = 60.0  # seconds without a drop after which a device's next drop is logged again
HELD = 2  # statuses held per device: the latest and the one before it


class DeviceThrottle:
    """Allows each device `rate` messages per second on average, in bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # device → (tokens, last refill)
        self._lock = threading.Lock()

    def allow(self, device_id: str) -> bool:
        now = self._clock()
        with self._lock:
            tokens = self._tokens(device_id, now)
            allowed = tokens >= 1
            self._buckets[device_id] = (tokens - 1 if allowed else tokens, now)
        return allowed

    def wait(self, device_id: str) -> float:
        """Seconds until `device_id` may send again (0 when it may now)."""
        with self._lock:
            tokens = self._tokens(device_id, self._clock())
        return max(0.0, (1 - tokens) / self._rate)

    def _tokens(self, device_id: str, now: float) -> float:
        tokens, last = self._buckets.get(device_id, (self._burst, now))
        return min(self._burst, tokens + (now - last) * self._rate)


class FloodLog:
    """Counts dropped messages, and logs a device's first drop of each kind once per episode."""

    def __init__(self, gap: float = EPISODE_GAP, clock: Clock = time.monotonic) -> None:
        self._gap, self._clock = gap, clock
        self._last: dict[tuple[str, str], float] = {}  # (kind, device) → time of its latest drop
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, dropped: int = 1) -> None:
        with self._lock:
            self._count += dropped

    def noticed(self, kind: str, device_id: str, message: str, *args: object) -> None:
        """`device_id` went over a limit: logged unless it already was within the last `gap` seconds."""
        now = self._clock()
        with self._lock:
            last = self._last.get((kind, device_id))
            self._last[(kind, device_id)] = now
        if last is None or now - last > self._gap:
            log.warning(message, *args)


Forward = Callable[[str, bytes | bytearray], None]


class StatusGate:
    """The status budget of each device; over it, statuses are held and forwarded later.

    `forward(device_id, payload)` is called for each status to record, in order, from the
    caller's thread (within budget) or the gate's own thread (a held status whose budget
    refilled); calls never overlap, so a held status is never recorded after a newer one.
    """

    def __init__(self, rate: float, burst: int, forward: Forward, flood: FloodLog, clock: Clock = time.monotonic) -> None:
        self._throttle = DeviceThrottle(rate, burst, clock)
        self._forward, self._flood, self._clock = forward, flood, clock
        self._held: dict[str, list[bytes | bytearray]] = {}
        self._due: list[tuple[float, str]] = []  # (when, device) heap of held devices
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def offer(self, device_id: str, payload: bytes | bytearray) -> None:
        """A status from `devices/<device_id>/status`: forwarded now, or held."""
        with self._lock:
            if self._throttle.allow(device_id):
                self._flood.add(len(self._held.pop(device_id, [])))  # superseded by this newer one
                self._forward(device_id, payload)
                return
            held = self._held.setdefault(device_id, [])
            if not held:
                heapq.heappush(self._due, (self._clock() + self._throttle.wait(device_id), device_id))
                self._lock.notify()
            held.append(payload)
            if len(held) > HELD:
                del held[0]
                self._flood.add()
        self._flood.noticed("status", device_id, "device %s sends more status messages (births, wills) than "
                            "FLEET_DEVICE_STATUS_RATE allows: only its latest is recorded, once its budget refills",
                            device_id)

    # ---- the gate's thread: forwards held statuses when their device's budget refilled ---------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-status-gate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def flush(self) -> None:
        """Forward every held status now, whatever the budgets (on stop: the latest status wins)."""
        with self._lock:
            for device_id in list(self._held):
                self._release(device_id)
            self._due.clear()

    def _run(self) -> None:
        with self._lock:
            while not self._stopping:
                self._lock.wait(self.release_due())

    def release_due(self) -> float | None:
        """Forward the held statuses whose budget refilled; seconds until the next one is due."""
        with self._lock:
            now = self._clock()
            while self._due and self._due[0][0] <= now:
                _when, device_id = heapq.heappop(self._due)
                if device_id not in self._held:
                    continue  # a newer status was forwarded meanwhile
                if self._throttle.allow(device_id):
                    self._release(device_id)
                else:
                    heapq.heappush(self._due, (now + self._throttle.wait(device_id), device_id))
            return self._due[0][0] - now if self._due else None

    def _release(self, device_id: str) -> None:
        held = self._held.pop(device_id, [])
        send = _to_record(held)
        self._flood.add(len(held) - len(send))
        for payload in send:
            try:
                self._forward(device_id, payload)
            except Exception:
                log.exception("failed to record a held status of device %s", device_id)


def _to_record(held: list[bytes | bytearray]) -> list[bytes | bytearray]:
    """Of a device's held statuses (oldest first), those to record: the latest, preceded by the
    one before it when the latest is the will of that birth (so the will is not stale)."""
    if len(held) < 2:
        return held
    before, latest = (_parse(p) for p in held[-2:])
    if latest is not None and before is not None and latest.state == "offline" and before.state == "online" \
            and latest.session_id == before.session_id:
        return held[-2:]
    return held[-1:]


def _parse(payload: bytes | bytearray) -> DeviceStatus | None:
    try:
        return DeviceStatus.model_validate_json(payload)
    except ValidationError:
        return None
