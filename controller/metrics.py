"""Prometheus metrics of one controller (`GET /metrics`; docs/architecture.md#statistics-and-metrics).

Each app has a `CollectorRegistry` of its own (several apps in one test process never
collide, and nothing lands in prometheus-client's global registry). Three kinds of values:

- gauges read from SQL at scrape time (devices by presence, tasks by status and type): two
  GROUP BY counts in a read session, reused for `cache_seconds` so a scrape storm costs the
  database at most one pair of queries per period;
- the controller's own counters and gauges, read from the objects that keep them (MQTT link
  state, disconnects and reconnects, ingest queue and messages, throttled and unreadable
  messages): free to read, never cached;
- the task duration histogram, observed by the ingest writer's thread after each batch that
  ended tasks committed (`ControllerMqtt.on_task_finished`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.models import Device, Task
from controller.services.finished import Finished

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PRESENCE = ("online", "offline")


class SqlSnapshot:
    """Devices by presence and tasks by status and type, counted by the database and kept for
    `ttl` seconds (thread-safe: a scrape that finds the cache stale counts while others wait)."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions, self._ttl, self._clock = sessions, ttl, clock
        self._lock = threading.Lock()
        self._taken: float | None = None
        self._value: tuple[dict[str, int], dict[tuple[str, str], int]] | None = None
        self.queries = 0  # how many times the database was asked (for tests and the benchmark)

    def get(self) -> tuple[dict[str, int], dict[tuple[str, str], int]] | None:
        """(devices per presence, tasks per (status, type)), or None when the database does not answer."""
        with self._lock:
            now = self._clock()
            if self._value is not None and self._taken is not None and now - self._taken < self._ttl:
                return self._value
            try:
                self._value = count_rows(self._sessions)
            except Exception as exc:
                log.warning("/metrics could not count devices and tasks: %s", str(exc).splitlines()[0] if str(exc) else exc)
                self._value = None
            self.queries += 1
            self._taken = now
            return self._value


def count_rows(sessions: sessionmaker[Session]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Devices per presence and tasks per (status, type): the two queries behind the SQL gauges."""
    with sessions() as session:
        devices = {status: count for status, count in session.execute(
            select(Device.status, func.count()).where(Device.deleted_at.is_(None)).group_by(Device.status))}
        tasks = {(status, type_): count for status, type_, count in session.execute(
            select(Task.status, Task.type, func.count()).group_by(Task.status, Task.type))}
    return devices, tasks


class FleetCollector(Collector):
    """Everything but the histogram, produced afresh on each scrape."""

    def __init__(self, snapshot: SqlSnapshot, mqtt: Callable[[], Any]) -> None:
        self._snapshot, self._mqtt = snapshot, mqtt

    def collect(self) -> Iterator[Metric]:
        yield from self._sql_gauges()
        mqtt = self._mqtt()
        if mqtt is None:
            return
        ingest = mqtt.ingest
        yield _gauge("fleet_mqtt_connected", "1 while connected and subscribed to the broker, else 0",
                     int(bool(mqtt.connected)))
        yield _gauge("fleet_mqtt_disconnects_recent", "broker link drops within the last minute", mqtt.recent_disconnects)
        yield _counter("fleet_mqtt_disconnects", "times the broker link dropped since start", mqtt.disconnects)
        yield _counter("fleet_mqtt_reconnects", "times the controller connected to the broker again", mqtt.reconnects)
        yield _gauge("fleet_ingest_queue", "device messages read from the broker and waiting to be recorded", ingest.queue)
        yield _gauge("fleet_ingest_queue_high_water", "the longest the ingest queue has been since start",
                     ingest.high_water)
        yield _counter("fleet_ingest_messages", "device messages (and broker acks) recorded since start", ingest.messages)
        yield _counter("fleet_ingest_batches", "ingest transactions since start", ingest.batches)
        yield _counter("fleet_throttled_messages", "device messages dropped over FLEET_DEVICE_MESSAGE_RATE or "
                       "FLEET_DEVICE_STATUS_RATE", mqtt.throttled_messages)
        yield _counter("fleet_invalid_messages", "device messages dropped because they could not be read",
                       mqtt.invalid_messages)

    def _sql_gauges(self) -> Iterator[Metric]:
        counted = self._snapshot.get()
        yield _gauge("fleet_database_up", "1 when the last count of devices and tasks succeeded", int(counted is not None))
        if counted is None:
            return
        devices, tasks = counted
        presence = GaugeMetricFamily("fleet_devices", "devices by presence", labels=["presence"])
        for status in sorted({*PRESENCE, *devices}):
            presence.add_metric([status], devices.get(status, 0))
        yield presence
        by_task = GaugeMetricFamily("fleet_tasks", "tasks in the database by status and type", labels=["status", "type"])
        for (status, type_), count in sorted(tasks.items()):
            by_task.add_metric([status, type_], count)
        yield by_task


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class FleetMetrics:
    """The registry of one controller app and the histogram the ingest writer feeds."""

    def __init__(self, sessions: sessionmaker[Session], mqtt: Callable[[], Any], cache_seconds: float) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.snapshot = SqlSnapshot(sessions, cache_seconds)
        self.registry.register(FleetCollector(self.snapshot, mqtt))
        self.task_duration = Histogram(
            "fleet_task_duration_seconds", "run time (started to final status) of the tasks this controller saw end",
            ["type", "status"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.tasks_finished = Counter(
            "fleet_tasks_finished", "tasks this controller saw reach a final status since start (started or not)",
            ["type", "status"], registry=self.registry,
        )

    def observe(self, ended: list[Finished]) -> None:
        """Record tasks that ended (called by the ingest writer after its commit)."""
        for task in ended:
            self.tasks_finished.labels(task.type, task.status).inc()
            if task.seconds is not None:
                self.task_duration.labels(task.type, task.status).observe(task.seconds)

