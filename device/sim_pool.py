"""`fleet simulate --processes N`: one simulated fleet split over N worker processes.

One event loop spends about 1 ms of CPU on each device's connect (aiomqtt, paho, the birth's
JSON) and 2–3 ms on each broadcast task's three events, so a single process takes 15 s of
CPU to bring 10,000 devices online, and the load generator, not the deployment under test,
sets the pace. `FleetPool` runs `SimulatedFleet(part=(i, N))` in each of N processes
(`multiprocessing`, the platform's default start method: spawn on Windows and macOS), so the
devices connect on every core. Each worker sends its counters to the parent every
`REPORT_EVERY` seconds; `counters` are their sum, `last_birth_at` the latest birth of any of
them (wall clock, comparable across processes), which is what "online within X s of the
births" is measured from.

    pool = FleetPool("mqtt://127.0.0.1:1883", 10_000, processes=2, heartbeat=30.0)
    pool.start()
    pool.wait_online(120)
    ...
    pool.stop()
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from device.simulator import DEFAULT_WAVE_TIMEOUT, SimulatedFleet, device_ids, use_selector_loop

log = logging.getLogger(__name__)

REPORT_EVERY = 0.1  # seconds between two counter reports of a worker
STOP_TIMEOUT = 60.0  # seconds a worker may take to publish its devices' shutdown statuses


@dataclass(frozen=True)
class _Report:
    worker: int
    counters: dict[str, int]
    last_birth_at: float
    last_error: str | None
    final: bool = False


def _worker(index: int, url: str, count: int, parts: int, options: dict[str, Any],
            reports: multiprocessing.Queue[_Report], stop: ProcessEvent) -> None:
    """A worker process: run its share of the fleet until `stop` is set. Ctrl-C reaches the
    whole process group; the parent alone decides when to stop (its shutdown statuses need
    the loop running)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_selector_loop()
    asyncio.run(_serve(index, SimulatedFleet(url, count, part=(index, parts), **options), reports, stop))


async def _serve(index: int, fleet: SimulatedFleet, reports: multiprocessing.Queue[_Report],
                 stop: ProcessEvent) -> None:
    def report(final: bool = False) -> None:
        c = fleet.counters
        reports.put(_Report(index, c.snapshot(), c.last_birth_at, c.last_error, final))

    starting = asyncio.create_task(fleet.start())
    try:
        while not stop.is_set():
            report()
            await asyncio.sleep(REPORT_EVERY)
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await fleet.stop()
        report(final=True)


class FleetPool:
    """`count` simulated devices over `processes` worker processes, driven from synchronous code."""

    def __init__(self, url: str, count: int, processes: int, **options: Any) -> None:
        """`options` are `SimulatedFleet`'s; a `seed` becomes seed + worker index. Checks them
        here, in the caller, so a bad setting fails before any process starts."""
        SimulatedFleet(url, count, part=(processes - 1, processes), **options)
        self.count = count
        self.ids = device_ids(options.get("prefix", "sim"), count)
        self.wave_timeout: float = options.get("wave_timeout", DEFAULT_WAVE_TIMEOUT)
        self._url, self._processes, self._options = url, processes, options
        context = multiprocessing.get_context()
        self._reports: multiprocessing.Queue[_Report] = context.Queue()
        self._stop = context.Event()
        self._workers: list[multiprocessing.process.BaseProcess] = []
        self._latest: dict[int, _Report] = {}
        self._final: set[int] = set()
        self._lock = threading.Lock()
        self._context = context

    def start(self) -> None:
        """Start the workers; each connects its share of the devices in waves."""
        for index in range(self._processes):
            options = dict(self._options)
            if options.get("seed") is not None:
                options["seed"] += index
            worker = self._context.Process(
                target=_worker, name=f"fleet-sim-{index}", daemon=True,
                args=(index, self._url, self.count, self._processes, options, self._reports, self._stop))
            worker.start()
            self._workers.append(worker)

    def _drain(self, wait: float = 0.0) -> None:
        with self._lock:
            try:
                while True:
                    report = self._reports.get(timeout=wait) if wait else self._reports.get_nowait()
                    self._latest[report.worker] = report
                    if report.final:
                        self._final.add(report.worker)
                    wait = 0.0
            except queue.Empty:
                pass

    @property
    def counters(self) -> dict[str, int]:
        """The workers' counters (`SimCounters.snapshot`), summed, as last reported."""
        self._drain()
        total: dict[str, int] = {}
        for report in self._latest.values():
            for name, value in report.counters.items():
                total[name] = total.get(name, 0) + value
        return total

    @property
    def last_birth_at(self) -> float:
        """Wall-clock time (`time.time()`) of the latest birth of any device; 0 before the first."""
        self._drain()
        return max((report.last_birth_at for report in self._latest.values()), default=0.0)

    @property
    def last_error(self) -> str | None:
        self._drain()
        return next((r.last_error for r in self._latest.values() if r.last_error), None)

    def wait_online(self, timeout: float) -> bool:
        """True once every device was born at least once, False after `timeout` seconds or when
        a worker died."""
        deadline = time.monotonic() + timeout
        while self.counters.get("births", 0) < self.count:
            if time.monotonic() >= deadline or any(not w.is_alive() for w in self._workers):
                return False
            self._drain(wait=REPORT_EVERY)
        return True

    def stop(self) -> None:
        """Have every worker publish its devices' shutdown statuses and exit; safe to call twice."""
        self._stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT
        while len(self._final) < len(self._workers) and time.monotonic() < deadline:
            if all(not w.is_alive() for w in self._workers):
                break
            self._drain(wait=REPORT_EVERY)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.warning("simulator worker %s did not stop in time; terminating it", worker.name)
                worker.terminate()
                worker.join(5)
        self._workers.clear()
