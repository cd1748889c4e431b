"""Per-device limits (`controller/throttle.py`): token buckets, the flood log, and the status
gate that holds a flooding device's statuses and records only its latest once its budget
refills; and `ControllerMqtt` routing a flood of births and results through them."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from config.settings import FleetSettings
from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.mqtt import ControllerMqtt
from controller.throttle import DeviceThrottle, FloodLog, StatusGate
from tests.flooder import birth, result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate(clock: Clock, rate: float = 2, burst: int = 2) -> tuple[StatusGate, list[tuple[str, bytes]], FloodLog]:
    forwarded: list[tuple[str, bytes]] = []
    flood = FloodLog(clock=clock)
    return StatusGate(rate, burst, lambda d, p: forwarded.append((d, bytes(p))), flood, clock), forwarded, flood


def test_bucket_refills_at_its_rate_per_device() -> None:
    clock = Clock()
    throttle = DeviceThrottle(rate=10, burst=3, clock=clock)
    assert [throttle.allow("noisy") for _ in range(4)] == [True, True, True, False]
    assert throttle.allow("quiet")
    assert throttle.wait("noisy") == pytest.approx(0.1)
    clock.now += 0.1
    assert throttle.wait("noisy") == 0 and throttle.allow("noisy") and not throttle.allow("noisy")


def test_flood_log_warns_once_per_episode_and_counts_every_drop(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    flood = FloodLog(gap=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="controller.throttle"):
        for _ in range(100):
            flood.add()
            flood.noticed("results", "noisy", "device %s floods", "noisy")
            clock.now += 0.5  # a steady flood: never 60 s without a drop
        flood.noticed("status", "noisy", "device %s floods its status", "noisy")
        flood.noticed("results", "other", "device %s floods", "other")
        clock.now += 61
        flood.noticed("results", "noisy", "device %s floods", "noisy")  # a new episode
    assert [r.getMessage() for r in caplog.records] == [
        "device noisy floods", "device noisy floods its status", "device other floods", "device noisy floods"]
    assert flood.count == 100


def test_statuses_within_budget_pass_at_once_over_it_the_latest_is_held() -> None:
    clock = Clock()
    status, forwarded, flood = gate(clock, rate=2, burst=2)
    for n in range(5):
        status.offer("noisy", birth("noisy", f"s{n}").encode())
    status.offer("quiet", birth("quiet", "q1").encode())
    assert [(d, p.count(b'"s0"') + p.count(b'"s1"') + p.count(b'"q1"')) for d, p in forwarded] == [
        ("noisy", 1), ("noisy", 1), ("quiet", 1)]
    assert status.release_due() == pytest.approx(0.5)  # noisy's budget refills in 1/rate s
    assert len(forwarded) == 3
    clock.now += 0.5
    assert status.release_due() is None
    assert len(forwarded) == 4 and b'"s4"' in forwarded[-1][1]  # the latest, not s2 or s3
    assert flood.count == 2  # s2 and s3 were dropped


def test_a_newer_status_within_budget_supersedes_the_held_one() -> None:
    clock = Clock()
    status, forwarded, flood = gate(clock, rate=2, burst=1)
    status.offer("noisy", birth("noisy", "s0").encode())
    status.offer("noisy", birth("noisy", "s1").encode())  # held
    clock.now += 0.6
    status.offer("noisy", birth("noisy", "s2").encode())  # budget refilled: passes, s1 is dropped
    assert status.release_due() is None
    assert [b'"s0"' in p or b'"s2"' in p for _d, p in forwarded] == [True, True] and len(forwarded) == 2
    assert flood.count == 1


def test_a_held_will_is_recorded_after_its_own_birth() -> None:
    clock = Clock()
    status, forwarded, _flood = gate(clock, rate=1, burst=1)
    status.offer("noisy", birth("noisy", "s0").encode())
    status.offer("noisy", birth("noisy", "s1").encode())
    status.offer("noisy", birth("noisy", "s2").encode())
    status.offer("noisy", birth("noisy", "s2", state="offline").encode())
    clock.now += 1
    status.release_due()
    states = [(b'"offline"' in p, b'"s2"' in p) for _d, p in forwarded[1:]]
    assert states == [(False, True), (True, True)]  # birth s2, then its will: the device shows offline


def test_the_gate_thread_releases_the_latest_when_the_budget_refills() -> None:
    released = threading.Event()
    forwarded: list[bytes] = []

    def forward(_device_id: str, payload: bytes | bytearray) -> None:
        forwarded.append(bytes(payload))
        if b'"last"' in payload:
            released.set()

    status = StatusGate(20, 1, forward, FloodLog())
    status.start()
    try:
        for n in range(50):
            status.offer("noisy", birth("noisy", f"s{n}").encode())
        status.offer("noisy", birth("noisy", "last").encode())
        assert released.wait(5), forwarded
    finally:
        status.stop()
    assert len(forwarded) == 2  # s0 at once, then only the latest


@pytest.fixture
def controller_mqtt(tmp_path: Path) -> ControllerMqtt:
    settings = FleetSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}",
                             device_status_rate=2, device_status_burst=5, device_message_rate=50,
                             device_message_burst=100)
    engine = create_db_engine(settings.resolved_database_url)
    migrate(engine)
    return ControllerMqtt(settings, create_sessionmaker(engine))


def test_a_flood_of_births_and_results_queues_only_what_the_budgets_allow(
    controller_mqtt: ControllerMqtt, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="controller.throttle"):
        for n in range(2000):
            controller_mqtt._route("devices/noisy/status", birth("noisy", f"s{n}").encode())
            controller_mqtt._route("devices/noisy/results", result("noisy", f"t{n}", "s").encode())
        controller_mqtt._route("devices/quiet/status", birth("quiet", "q1").encode())
        controller_mqtt._route("devices/quiet/results", result("quiet", "q-t1", "q1").encode())
    refilled = (time.monotonic() - started) * (50 + 2) + 2  # what the budgets regained meanwhile
    queued = controller_mqtt.ingest.queue
    # The flooder's bursts (5 births, 100 results) and what refilled; quiet's birth and result.
    assert 107 <= queued <= 107 + refilled, (queued, refilled)
    # Every other message was dropped, but the two latest held births (recorded when the budget refills).
    assert 4000 + 2 - queued - 2 <= controller_mqtt.throttled_messages <= 4000 + 2 - queued, queued
    assert controller_mqtt.invalid_messages == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("device noisy" in w for w in warnings), warnings
