"""Batch creation end to end: `POST /api/v1/tasks/batch` and `fleet task send-batch` against a
real controller (SQLite and PostgreSQL), real brokers and `fleet simulate`'s devices. Every
task of a batch runs once and is recorded final; a batch with a wrong item creates nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Broker, Controller, Process, SimulatorThread, base_env, fleet_argv, wait_for

pytestmark = pytest.mark.integration

DEVICES = 20
TASKS = 600  # over DEVICES devices: 30 each, three events each
SLOW_READ = 60.0  # REST reads may wait behind the ingest writer's batches; this test is about nothing lost


@pytest.fixture(params=["sqlite", "postgres"])
def batch_controller(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path,
                     _processes: list[Process]) -> Controller:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    instance = Controller(broker, tmp_path, database_url=url, keepalive="5")
    _processes.append(instance.process)
    instance.start()
    return instance


@pytest.fixture
def sim_fleet(broker: Broker) -> Iterator[SimulatorThread]:
    fleet = SimulatorThread(broker.url, DEVICES, prefix="bat", heartbeat=30.0, seed=3)
    yield fleet
    fleet.close()


def _total(controller: Controller, **query: str) -> int:
    page = controller.api.get("/api/v1/tasks", params={**query, "limit": 1}, timeout=SLOW_READ).json()
    return int(page["total"])


def test_a_batch_runs_every_task_once_and_a_wrong_one_creates_nothing(
    batch_controller: Controller, sim_fleet: SimulatorThread, tmp_path: Path
) -> None:
    controller, fleet = batch_controller, sim_fleet.fleet
    sim_fleet.call(fleet.start())
    assert sim_fleet.call(fleet.wait_online(60)), fleet.counters.snapshot()
    wait_for(lambda: controller.api.get("/api/v1/devices", params={"status": "online", "limit": 1},
                                        timeout=SLOW_READ).json()["total"] == DEVICES, 60, 0.2, "all devices online")

    tasks = [{"device_id": fleet.ids[n % DEVICES], "type": "echo", "params": {"message": str(n)}} for n in range(TASKS)]
    response = controller.api.post("/api/v1/tasks/batch", json={"tasks": tasks}, timeout=SLOW_READ)
    assert response.status_code == 201, response.text
    created = response.json()["items"]
    assert [(t["device_id"], t["params"]["message"]) for t in created] == [(t["device_id"], t["params"]["message"])
                                                                          for t in tasks]
    wait_for(lambda: _total(controller, status="succeeded") == TASKS, 120, 0.2, f"all {TASKS} tasks succeeded")
    assert fleet.counters.tasks_run == TASKS and fleet.counters.succeeded == TASKS, "each task ran exactly once"
    sample = controller.task(created[TASKS // 2]["id"])
    assert sample is not None and sample["dispatch_count"] >= 1 and sample["result"]["message"] == str(TASKS // 2)
    assert [e["event"] for e in sample["events"]] == ["accepted", "started", "succeeded"]

    wrong = [tasks[0], {"device_id": "bat-nobody", "type": "echo", "params": {"message": "x"}}]
    refused = controller.api.post("/api/v1/tasks/batch", json={"tasks": wrong}, timeout=SLOW_READ)
    assert refused.status_code == 422 and "tasks[1]: device 'bat-nobody'" in refused.json()["detail"]
    assert _total(controller) == TASKS

    batch_file = tmp_path / "batch.json"
    batch_file.write_text(json.dumps([{"device_id": fleet.ids[0], "type": "ping"}, {"device_id": fleet.ids[1], "type": "ping"}]))
    env = base_env(api_url=f"http://127.0.0.1:{controller.port}", api_token=controller.admin_token,
                   data_dir=str(tmp_path / "cli"))
    sent = subprocess.run(fleet_argv("task", "send-batch", str(batch_file)), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    lines = [line.split("\t") for line in sent.stdout.splitlines() if "\t" in line]
    assert [(device, kind) for _, device, kind in lines] == [(fleet.ids[0], "ping"), (fleet.ids[1], "ping")]
    for task_id, _, _ in lines:
        controller.wait_task(task_id, {"succeeded"}, timeout=60)
