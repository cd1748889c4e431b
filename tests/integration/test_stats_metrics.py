"""`GET /api/v1/stats`, `fleet stats` and `/metrics` against a real fleet, on SQLite and on a
fresh PostgreSQL database: a Mosquitto broker, a controller, one `fleet device` daemon and
three simulated devices (`fleet simulate`'s library, some of whose tasks fail) run real tasks;
the test computes every expected count, success rate and median from the tasks it created
(read back one by one through REST) and compares; then it scrapes /metrics, parses it with
prometheus-client's parser and checks the devices online, the tasks by status and type, the
task duration histogram against the tasks' own run times, a flood counted as throttled, and a
broker restart counted as a reconnect."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.instance import FLAP_LIMIT
from schemas.events import FINAL_STATUSES
from tests.databases import fresh_postgres
from tests.harness import (
    Broker,
    Controller,
    Device,
    MqttProbe,
    Process,
    SimulatorThread,
    base_env,
    fleet_argv,
    missing_service,
    wait_for,
)

pytestmark = pytest.mark.integration

SIM_DEVICES = 3
MESSAGE_BURST = 60  # FLEET_DEVICE_MESSAGE_BURST of the controller: a device's tasks stay far below it
FLOOD = 200  # results a probe sends for one made-up device at once: most are throttled


@dataclass
class Fleet:
    controller: Controller
    broker: Broker
    sim: SimulatorThread
    work: Path
    tasks: list[dict[str, Any]] = field(default_factory=list)  # final REST views of the tasks created


def _run_workload(controller: Controller) -> list[dict[str, Any]]:
    """Tasks that succeed, fail (the simulator's failure rate), time out (the real daemon) and
    are rejected (chat on devices that cannot chat); returns their final REST views."""
    created = []
    for n in range(4):
        created.append(controller.create_task("pc-real", "echo", account="acc-real", params={"message": f"m{n}"}))
    for _ in range(2):
        created.append(controller.create_task("pc-real", "sleep", params={"seconds": 5, "steps": 1}, timeout=0.5))
    for i in range(SIM_DEVICES):
        device = f"sim-{i:04d}"
        for n in range(5):
            created.append(controller.create_task(device, "echo", account=f"acc-{n % 2}", params={"message": "x"}))
        created.append(controller.create_task(device, "sleep", params={"seconds": 0.05, "steps": 1}))
        created.append(controller.create_task(device, "chat", account="acc-chat",
                                              params={"platform": "reference", "to": "someone", "message": "hi"}))
    return [controller.wait_task(task["id"], set(FINAL_STATUSES), timeout=60) for task in created]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp(f"stats-{request.param}")
    processes: list[Process] = []
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = stack.enter_context(fresh_postgres("fleet_stats", lambda problem: missing_service(str(problem))))
        broker = Broker("mosquitto", work)
        processes.append(broker.process)
        stack.callback(lambda: [process.kill() for process in processes])
        broker.start()
        controller = Controller(broker, work, database_url=url, metrics_cache_seconds="0.2",
                                device_message_rate="20", device_message_burst=str(MESSAGE_BURST))
        processes.append(controller.process)
        controller.start()
        real = Device("pc-real", broker, work, keepalive="5")
        processes.append(real.process)
        real.start()
        sim = SimulatorThread(broker.url, SIM_DEVICES, prefix="sim", heartbeat=30.0, failure_rate=0.4, seed=11)
        stack.callback(sim.close)
        sim.call(sim.fleet.start())
        for device in ["pc-real", *(f"sim-{i:04d}" for i in range(SIM_DEVICES))]:
            controller.wait_device(device, "online", timeout=30)
        fleet = Fleet(controller, broker, sim, work)
        fleet.tasks = _run_workload(controller)
        yield fleet


# ---- what the test expects, from the tasks it created ---------------------------------------


def _seconds(task: dict[str, Any]) -> float | None:
    if task["started_at"] is None or task["finished_at"] is None:
        return None
    return (datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])).total_seconds()


def _expected_group(tasks: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        value = (task["params"] or {}).get("platform") if key == "platform" else task[key]
        if value is not None:
            groups.setdefault(value, []).append(task)
    expected = {}
    for value, members in groups.items():
        finished = sum(t["status"] in FINAL_STATUSES for t in members)
        succeeded = sum(t["status"] == "succeeded" for t in members)
        runs = [s for t in members if t["status"] == "succeeded" and (s := _seconds(t)) is not None]
        expected[value] = {"total": len(members), "finished": finished, "succeeded": succeeded,
                           "success_rate": round(succeeded / finished, 6) if finished else None,
                           "median_seconds": statistics.median(runs) if runs else None}
    return expected


def _check_groups(got: list[dict[str, Any]], expected: dict[str, dict[str, Any]], what: str) -> None:
    assert {g["key"] for g in got} == set(expected), what
    for group in got:
        want = expected[group["key"]]
        for name in ("total", "finished", "succeeded", "success_rate"):
            assert group[name] == want[name], (what, group, want)
        if want["median_seconds"] is None:
            assert group["median_seconds"] is None, (what, group)
        else:
            assert group["median_seconds"] == pytest.approx(want["median_seconds"], abs=0.002), (what, group, want)


def test_stats_match_the_counts_of_the_tasks_created(fleet: Fleet) -> None:
    controller, tasks = fleet.controller, fleet.tasks
    statuses = Counter(t["status"] for t in tasks)
    assert statuses["succeeded"] > 0 and statuses["timed_out"] == 2 and statuses["rejected"] == SIM_DEVICES, statuses

    response = controller.api.get("/api/v1/stats", params={"window": "1h"})
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["total"] == len(tasks)
    assert stats["by_state"] == dict(statuses)
    assert stats["by_type"] == dict(Counter(t["type"] for t in tasks))
    assert stats["succeeded"] == statuses["succeeded"] and stats["finished"] == len(tasks)
    _check_groups(stats["per_device"], _expected_group(tasks, "device_id"), "per device")
    _check_groups(stats["per_account"], _expected_group(tasks, "account"), "per account")
    _check_groups(stats["per_platform"], _expected_group(tasks, "platform"), "per platform")
    _check_groups(stats["per_type"], _expected_group(tasks, "type"), "per type")
    assert [g["key"] for g in stats["per_platform"]] == ["reference"]

    real = [t for t in tasks if t["device_id"] == "pc-real"]
    only_real = controller.api.get("/api/v1/stats", params={"device_id": "pc-real"}).json()
    assert only_real["total"] == len(real) and only_real["by_state"] == dict(Counter(t["status"] for t in real))
    echoes = [t for t in tasks if t["type"] == "echo"]
    only_echo = controller.api.get("/api/v1/stats", params={"type": "echo", "window": "7d"}).json()
    assert only_echo["by_type"] == {"echo": len(echoes)}
    _check_groups(only_echo["per_account"], _expected_group(echoes, "account"), "echo per account")
    first = min(datetime.fromisoformat(t["created_at"]) for t in tasks)
    before = controller.api.get("/api/v1/stats", params={"until": first.isoformat()}).json()
    assert before["total"] == 0 and before["per_device"] == []

    for bad, words in [({"window": "2h"}, "1h"), ({"window": "1h", "since": first.isoformat()}, "not both"),
                       ({"since": "yesterday"}, "datetime"),
                       ({"since": first.isoformat(), "until": first.isoformat()}, "must be before")]:
        refused = controller.api.get("/api/v1/stats", params=bad)
        assert refused.status_code == 422 and words in refused.text, (bad, refused.text)

    env = base_env(api_url=str(controller.api.base_url), api_token=controller.admin_token)
    shown = subprocess.run(fleet_argv("stats", "--window", "1h"), env=env, capture_output=True, text=True, timeout=60,
                           cwd=fleet.work)
    assert shown.returncode == 0, shown.stderr
    assert f"tasks created from {stats['since'][:10]}" in shown.stdout and "pc-real" in shown.stdout
    assert "reference" in shown.stdout and "acc-real" in shown.stdout


# ---- /metrics -------------------------------------------------------------------------------


def _scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_scraped_and_parsed(fleet: Fleet) -> None:
    controller, tasks = fleet.controller, fleet.tasks
    assert httpx.get(f"{controller.api.base_url}/metrics").status_code == 401  # a token is needed by default
    made = controller.api.post("/api/v1/tokens", json={"name": "prometheus", "scope": "read"})
    assert made.status_code == 201, made.text
    reader = httpx.Client(base_url=controller.api.base_url, timeout=10,
                          headers={"Authorization": f"Bearer {made.json()['token']}"})

    online = ("fleet_devices", (("presence", "online"),))
    metrics = wait_for(lambda: (m := _scrape(reader))[online] == 1 + SIM_DEVICES and m, 30, 0.1, "all devices online")
    assert metrics[("fleet_mqtt_connected", ())] == 1
    assert metrics[("fleet_database_up", ())] == 1
    by_status_type = Counter((t["status"], t["type"]) for t in tasks)
    for (status, type_), count in by_status_type.items():
        assert metrics[("fleet_tasks", (("status", status), ("type", type_)))] == count, (status, type_)
    for (status, type_), count in by_status_type.items():  # every end the ingest writer recorded
        labels = (("status", status), ("type", type_))
        assert metrics[("fleet_tasks_finished_total", labels)] == count, labels
    ran = [s for t in tasks if t["type"] == "echo" and t["status"] == "succeeded" and (s := _seconds(t)) is not None]
    duration = (("status", "succeeded"), ("type", "echo"))
    assert metrics[("fleet_task_duration_seconds_count", duration)] == len(ran) > 0
    assert metrics[("fleet_task_duration_seconds_sum", duration)] == pytest.approx(sum(ran), abs=0.001)
    assert metrics[("fleet_task_duration_seconds_bucket", tuple(sorted((*duration, ("le", "+Inf")))))] == len(ran)

    dropped, invalid = ("fleet_throttled_messages_total", ()), ("fleet_invalid_messages_total", ())
    flooder = MqttProbe(fleet.broker, "fleet/stats-test/none")
    try:
        for _ in range(FLOOD):
            flooder.publish("devices/flooder/results", b"{not json")
        throttled = wait_for(lambda: (m := _scrape(reader))[dropped] >= metrics[dropped] + FLOOD // 2 and m, 20, 0.1,
                             "the flood counted as throttled")
    finally:
        flooder.close()
    health = controller.api.get("/healthz").json()
    assert throttled[dropped] <= health["throttled_messages"]
    assert throttled[invalid] > metrics[invalid]

    before = _scrape(reader)
    fleet.broker.kill()
    wait_for(lambda: _scrape(reader)[("fleet_mqtt_connected", ())] == 0, 20, 0.1, "the controller noticing")
    fleet.broker.start()
    reconnects = before[("fleet_mqtt_reconnects_total", ())]
    after = wait_for(lambda: (m := _scrape(reader))[("fleet_mqtt_reconnects_total", ())] == reconnects + 1
                     and m[("fleet_mqtt_connected", ())] == 1 and m, 30, 0.1, "a reconnect counted")
    assert after[("fleet_mqtt_disconnects_total", ())] == before[("fleet_mqtt_disconnects_total", ())] + 1
    healthz = controller.api.get("/healthz")
    if healthz.json()["mqtt_disconnects_recent"] < FLAP_LIMIT:  # one drop is not flapping
        assert healthz.status_code == 200 and healthz.json()["status"] == "ok", healthz.text
    else:  # repeated runs of this test (--count) restart the broker FLAP_LIMIT times a minute
        assert healthz.status_code == 503 and healthz.json()["problem"] == "broker_flapping", healthz.text
