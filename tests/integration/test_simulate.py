"""`fleet simulate` against real brokers and a real controller.

A few hundred simulated devices (the library, on an event loop in a thread of the test) are
all shown online by the controller, a broadcast to them is recorded in full with none lost,
and a repeated task id is answered from the device's journal without running again; the
`fleet simulate` command itself brings devices online and takes them offline on SIGTERM.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Broker, Controller, MqttProbe, Process, SimulatorThread, fleet_argv, wait_for

pytestmark = pytest.mark.integration

DEVICES = 300
# REST reads may wait behind the ingest writer's SQLite transactions while hundreds of births
# or results are recorded; this test is about nothing being lost, benchmarks time it.
SLOW_READ = 60.0


@pytest.fixture
def sim_fleet(broker: Broker) -> Iterator[SimulatorThread]:
    fleet = SimulatorThread(broker.url, DEVICES, prefix="sim", heartbeat=30.0, seed=7)
    yield fleet
    fleet.close()


def _count(controller: Controller, status: str) -> int:
    """Devices the controller shows in `status` (the test's controller knows only simulated ones)."""
    page = controller.api.get("/api/v1/devices", params={"status": status, "limit": 1},
                                timeout=SLOW_READ).json()
    return int(page["total"])


def test_hundreds_of_simulated_devices_online_broadcast_recorded_repeat_answered(
    controller: Controller, sim_fleet: SimulatorThread, probe: Any
) -> None:
    fleet = sim_fleet.fleet
    sim_fleet.call(fleet.start())
    assert sim_fleet.call(fleet.wait_online(60)), fleet.counters.snapshot()
    wait_for(lambda: _count(controller, "online") == DEVICES, 60, 0.2, f"all {DEVICES} devices online in REST")

    response = controller.api.post("/api/v1/broadcasts", json={"type": "echo", "params": {"message": "all"}},
                                   timeout=SLOW_READ)
    assert response.status_code == 201, response.text
    broadcast = response.json()
    assert len(broadcast["task_ids"]) == DEVICES

    def counts() -> dict[str, int]:
        return dict(controller.api.get(f"/api/v1/broadcasts/{broadcast['id']}", timeout=SLOW_READ).json()["status_counts"])

    wait_for(lambda: counts() == {"succeeded": DEVICES}, 90, 0.2, f"all {DEVICES} broadcast results recorded")
    assert fleet.counters.tasks_run == DEVICES and fleet.counters.succeeded == DEVICES

    task = controller.create_task("sim-0007", "echo", params={"message": "once"})
    controller.wait_task(task["id"], {"succeeded"}, timeout=30)
    watcher: MqttProbe = probe("devices/sim-0007/results")
    envelope = {"id": task["id"], "type": "echo", "params": {"message": "once"}}
    watcher.publish("devices/sim-0007/tasks", json.dumps(envelope))  # the same id again
    wait_for(lambda: any(e.get("replay") for e in watcher.json_messages()), 20, what="the replayed outcome")
    timeline = wait_for(
        lambda: (t := controller.task(task["id"])) is not None and any(e["replay"] for e in t["events"]) and t,
        20, what="the replay in the task's timeline",
    )
    assert [e["event"] for e in timeline["events"]].count("started") == 1
    assert timeline["status"] == "succeeded" and timeline["result"] == {"simulated": True, "message": "once", "data": {}}
    assert fleet.device("sim-0007").journal.executions(task["id"]) == 1
    assert fleet.counters.tasks_run == DEVICES + 1 and fleet.counters.duplicates_answered == 1

    sim_fleet.close()
    wait_for(lambda: _count(controller, "offline") == DEVICES, 60, 0.2, "all devices offline after stop")


@pytest.mark.parametrize("processes", [1, 2])
def test_the_simulate_command_comes_online_and_stops_cleanly(
    broker: Broker, controller: Controller, tmp_path: Path, _processes: list[Process], processes: int
) -> None:
    """In one process, and over two (`--processes`): SIGTERM stops every worker's devices."""
    command = Process("simulate", fleet_argv("simulate", "-n", "25", "--processes", str(processes), "--mqtt-url",
                                             broker.url, "--prefix", "cli", "--every", "1", "--seed", "1"), tmp_path)
    _processes.append(command)
    command.start()
    wait_for(lambda: _count(controller, "online") == 25, 60, 0.2, "25 simulated devices online in REST")
    assert command.popen is not None
    command.popen.send_signal(signal.SIGTERM)
    assert command.popen.wait(60) == 0, command.log_tail()
    wait_for(lambda: _count(controller, "offline") == 25, 30, 0.2, "all 25 offline after SIGTERM")
    log = command.log_path.read_text()
    assert "simulating 25 device(s) cli-0000 … cli-0024 on" in log
    assert ("in 2 processes" in log) == (processes == 2)
    assert "online 0/25  births 25" in log.splitlines()[-1]  # every device was born, then stopped
