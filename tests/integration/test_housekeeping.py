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
        controller = Controller(broker, work, sweep_interval="0.2", keepalive="5", accept_declared_groups="true",
                                task_defaults={"ping": {"ttl": SHORT_TTL, "timeout": 5}},
                                retention_connections="2s", prune_interval="1")
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


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env(api_url=f"http://127.0.0.1:{fleet.controller.port}", api_token=fleet.controller.admin_token)
    return subprocess.run(fleet_argv(*args), env=env, cwd=fleet.work, capture_output=True, text=True, timeout=60)


def _sleep(fleet: Fleet, device_id: str, seconds: float = 60, **body: Any) -> str:
    return str(fleet.controller.create_task(device_id, "sleep", params={"seconds": seconds, "steps": 1}, **body)["id"])


def _running(fleet: Fleet, *task_ids: str) -> None:
    wait_for(lambda: all((t := fleet.controller.task(i)) is not None and t["status"] == "running" for i in task_ids),
             15, 0.1, f"{task_ids} running")


def test_placement_picks_the_least_loaded_online_device(fleet: Fleet) -> None:
    api, (one, two, three) = fleet.controller.api, fleet.sims.fleet.ids
    busy = [_sleep(fleet, one), _sleep(fleet, one), _sleep(fleet, two)]  # loads: 2, 1, 0 (and `gone`: 0, offline)
    _running(fleet, *busy)
    pool = {"target": {"groups": ["pool"]}}
    placed = api.post("/api/v1/tasks", json={"type": "sleep", "params": {"seconds": 60, "steps": 1}, "placement": pool})
    assert placed.status_code == 201, placed.text
    assert placed.json()["device_id"] == three  # never `gone`: offline, though idle
    busy.append(placed.json()["id"])
    _running(fleet, placed.json()["id"])  # loads now 2, 1, 1: pl-2 and pl-3 tie on tasks; by CPU, then id
    pair = {"target": {"device_ids": [one, two]}}
    second = api.post("/api/v1/tasks", json={"type": "ping", "placement": pair})
    assert second.status_code == 201 and second.json()["device_id"] == two, second.text
    assert fleet.controller.wait_task(second.json()["id"])["status"] == "succeeded"
    by_cli = _cli(fleet, "task", "send", "-", "ping", "--place-in", "pool")  # loads 2, 1, 1, gone offline
    assert by_cli.returncode == 0 and two in by_cli.stdout, by_cli.stdout + by_cli.stderr

    offline = api.post("/api/v1/tasks", json={"type": "ping", "placement": {"target": {"device_ids": [fleet.gone]}}})
    assert offline.status_code == 409 and "none of the 1 device(s) of the target is online" in offline.json()["detail"]
    nobody = api.post("/api/v1/tasks", json={"type": "ping", "placement": {"target": {"groups": ["nowhere"]}}})
    assert nobody.status_code == 409 and "selects no device" in nobody.json()["detail"]
    unable = api.post("/api/v1/tasks", json={"type": "chat", "placement": pool,
                                             "params": {"platform": "douyin", "to": "u", "message": "hi"}})
    assert unable.status_code == 409 and "runs task type 'chat'" in unable.json()["detail"]
    both = api.post("/api/v1/tasks", json={"type": "ping", "device_id": one, "placement": pool})
    assert both.status_code == 422 and "either device_id or placement" in str(both.json()["detail"])
    empty = api.post("/api/v1/tasks", json={"type": "ping", "placement": {"target": {}}})
    assert empty.status_code == 422 and "name the devices" in str(empty.json()["detail"])
    done = api.post("/api/v1/tasks/cancel", json={"type": "sleep"})
    assert done.status_code == 200 and done.json()["count"] == len(busy)
    for task_id in busy:
        assert fleet.controller.wait_task(task_id)["status"] == "canceled"


def test_bulk_cancel_by_filter_dry_run_and_cli(fleet: Fleet) -> None:
    api, (one, two, _three) = fleet.controller.api, fleet.sims.fleet.ids
    running = [_sleep(fleet, one, account="acct-bulk"), _sleep(fleet, two, account="acct-bulk")]
    other = _sleep(fleet, two, account="acct-other")
    queued = [fleet.controller.create_task(fleet.gone, "ping", ttl=600)["id"] for _ in range(3)]
    _running(fleet, *running, other)

    refused = api.post("/api/v1/tasks/cancel", json={"status": ["running"]})
    assert refused.status_code == 422 and "at least one of device_id" in str(refused.json()["detail"])
    dry = api.post("/api/v1/tasks/cancel", json={"account": "acct-bulk", "dry_run": True}).json()
    assert (dry["count"], sorted(dry["task_ids"]), dry["dry_run"]) == (2, sorted(running), True)
    assert all(fleet.controller.task(i)["status"] == "running" for i in running)  # type: ignore[index]

    result = _cli(fleet, "task", "cancel", "--device", fleet.gone, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would cancel 3 task(s)" in result.stdout and all(i in result.stdout for i in queued)
    result = _cli(fleet, "task", "cancel", "--device", fleet.gone, "--status", "queued", "--status", "dispatched")
    assert result.returncode == 0 and "canceled 3 task(s)" in result.stdout, result.stdout + result.stderr
    for task_id in queued:  # not on any device: ended by the controller at once
        assert fleet.controller.task(task_id)["status"] == "canceled"  # type: ignore[index]

    canceled = api.post("/api/v1/tasks/cancel", json={"account": "acct-bulk"}).json()
    assert canceled["count"] == 2
    for task_id in running:  # told to stop: the device reports `canceled` itself
        task = fleet.controller.wait_task(task_id, timeout=10)
        assert task["status"] == "canceled" and task["events"][-1]["event"] == "canceled"
    assert fleet.controller.task(other)["status"] == "running"  # type: ignore[index]
    again = api.post("/api/v1/tasks/cancel", json={"account": "acct-bulk"}).json()
    assert again["count"] == 0
    assert _cli(fleet, "task", "cancel").returncode == 2
    assert api.post("/api/v1/tasks/cancel", json={"account": "acct-other"}).json()["count"] == 1
    assert fleet.controller.wait_task(other)["status"] == "canceled"


def test_prune_now_by_rest_and_cli(fleet: Fleet) -> None:
    """The retention rules themselves are proven in tests/unit/test_retention.py (SQLite and
    PostgreSQL); here the REST route and `fleet prune` answer, with the settings' defaults."""
    dry = fleet.controller.api.post("/api/v1/prune", json={"dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["kept_for_ever"] == ["tasks"] and set(dry.json()["deleted"]) == {  # retention defaults
        "task_events", "device_connections", "alert_deliveries", "idempotency_keys"}
    result = _cli(fleet, "prune", "--dry-run")
    assert result.returncode == 0 and "would delete 0 task_events" in result.stdout, result.stdout + result.stderr
    result = _cli(fleet, "prune")
    assert result.returncode == 0 and "deleted 0 alert_deliveries" in result.stdout


def test_the_scheduled_prune_keeps_a_device_s_latest_presence_row(fleet: Fleet) -> None:
    """FLEET_RETENTION_CONNECTIONS=2s, FLEET_PRUNE_INTERVAL=1: the sweep-lease holder prunes on
    its own; `gone`'s birth row goes, the offline row that is its latest stays."""
    def states() -> list[str]:
        return [row["state"] for row in fleet.controller.api.get(f"/api/v1/devices/{fleet.gone}/connections").json()]

    wait_for(lambda: states() == ["offline"], 15, 0.2, "the scheduled prune of gone's older presence row")
    assert [row["state"] for row in fleet.controller.api.get(
        f"/api/v1/devices/{fleet.sims.fleet.ids[0]}/connections").json()] == ["online"]
