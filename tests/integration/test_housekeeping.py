"""Housekeeping end to end (issue 16, docs/architecture.md#housekeeping), on one embedded broker,
one controller and `fleet simulate` devices shared by the module: a task for a device that never
comes back expires by its type's default instead of waiting for ever; bulk cancel ends queued
and running tasks through the one cancel path; placement gives a task to the least-loaded online
device of a target and never to an offline one; a prune run now (REST and CLI) reports and
deletes old history."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Broker, Controller, Process, SimulatorThread, base_env, fleet_argv, wait_for

pytestmark = pytest.mark.integration

SHORT_TTL = 2.0  # the configured default ttl of `ping` in this module


@dataclass
class Fleet:
    controller: Controller
    sims: SimulatorThread  # pl-1 … pl-3, online, group "pool"
    gone: str  # a device that was online once and is offline for good
    work: Path


def _stop_one(url: str, prefix: str) -> str:
    """A simulated device born once, then stopped for good: known to the controller, offline."""
    sim = SimulatorThread(url, 1, prefix=prefix, heartbeat=30.0, groups=["pool"])
    try:
        sim.call(sim.fleet.start())
        assert sim.call(sim.fleet.wait_online(30))
        return sim.fleet.ids[0]
    finally:
        sim.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("housekeeping")
    processes: list[Process] = []
    broker = Broker("amqtt", work)
    processes.append(broker.process)
    sims: SimulatorThread | None = None
    try:
        broker.start()
        controller = Controller(broker, work, sweep_interval="0.2", keepalive="5",
                                task_defaults={"ping": {"ttl": SHORT_TTL, "timeout": 5}})
        processes.append(controller.process)
        controller.start()
        gone = _stop_one(broker.url, "gone")
        controller.wait_device(gone, "offline")
        sims = SimulatorThread(broker.url, 3, prefix="pl", heartbeat=30.0, groups=["pool"])
        sims.call(sims.fleet.start())
        assert sims.call(sims.fleet.wait_online(30))
        for device_id in sims.fleet.ids:
            controller.wait_device(device_id, "online")
        yield Fleet(controller, sims, gone, work)
    finally:
        if sims is not None:
            sims.close()
        for process in processes:
            process.kill()


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_task_for_a_device_that_never_returns_expires_by_its_default(fleet: Fleet) -> None:
    """The measured failure: a task for a device that never comes back sat `queued` with no
    expiry for ever. Now it gets its type's default ttl (and timeout) and the sweeper ends it."""
    api = fleet.controller.api
    created = fleet.controller.create_task(fleet.gone, "ping")
    assert created["status"] == "queued" and created["expires_at"] is not None and created["timeout"] == 5
    assert (_when(created["expires_at"]) - _when(created["created_at"])).total_seconds() == pytest.approx(SHORT_TTL, abs=0.1)
    ended = fleet.controller.wait_task(created["id"], timeout=SHORT_TTL + 10)
    assert ended["status"] == "expired"
    # Any other type gets the shipped `*` default: finite too.
    other = fleet.controller.create_task(fleet.gone, "echo", params={"message": "x"})
    assert (_when(other["expires_at"]) - _when(other["created_at"])).total_seconds() == pytest.approx(86_400, abs=1)
    assert other["timeout"] == 3600
    # An explicit ttl or timeout wins over the default.
    explicit = fleet.controller.create_task(fleet.gone, "ping", ttl=600, timeout=30)
    assert explicit["timeout"] == 30
    assert (_when(explicit["expires_at"]) - _when(explicit["created_at"])).total_seconds() == pytest.approx(600, abs=0.1)
    broadcast = api.post("/api/v1/broadcasts", json={"type": "ping", "group": "pool", "include_offline": True})
    assert broadcast.status_code == 201, broadcast.text
    run = fleet.controller.wait_task(f"{broadcast.json()['id']}:{fleet.gone}", timeout=SHORT_TTL + 10)
    assert run["status"] == "expired"
    assert api.post("/api/v1/tasks/cancel", json={"device_id": fleet.gone}).status_code == 200  # tidy for later tests
