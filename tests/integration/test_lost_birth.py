"""A device whose birth never reached the controller still gets its tasks (issue 13).

The device's earlier session was recorded; it went away, and a task created meanwhile was
published to nobody (devices connect with a clean session). Its next session's births and
wills go where the controller does not look, as if the broker lost them, while its heartbeats
and results travel as usual: the controller counts the session as born after a few heartbeats
(`controller.unborn`), takes the device for online and re-sends the task, which then runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from device import simulator
from device.sim_device import SimulatedDevice
from tests.harness import Broker, Controller, Device, SimulatorThread, wait_for

pytestmark = pytest.mark.integration

PREFIX = "pc-lost"
DEVICE_ID = simulator.device_ids(PREFIX, 1)[0]


class BirthLostDevice(SimulatedDevice):
    """A simulated device whose status messages (birth and will) never reach the controller."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._status_topic = f"lost/{self._status_topic}"


@pytest.fixture
def birth_lost_device(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], SimulatorThread]]:
    started: list[SimulatorThread] = []

    def start() -> SimulatorThread:
        monkeypatch.setattr(simulator, "SimulatedDevice", BirthLostDevice)
        sim = SimulatorThread(broker.url, 1, prefix=PREFIX, heartbeat=1.0)
        started.append(sim)
        sim.call(sim.fleet.start())
        return sim

    yield start
    for sim in started:
        sim.close()


def test_a_device_whose_birth_was_lost_gets_its_pending_task(
    controller: Controller, start_device: Callable[..., Device], birth_lost_device: Callable[[], SimulatorThread]
) -> None:
    daemon = start_device(DEVICE_ID)
    controller.wait_device(DEVICE_ID, "online")
    daemon.process.stop()
    controller.wait_device(DEVICE_ID, "offline")
    task = controller.create_task(DEVICE_ID, "echo", params={"message": "sent while it was away"})
    wait_for(lambda: (t := controller.task(task["id"])) and t["status"] == "dispatched", 10,
             what="the task published (to nobody: the device is gone)")

    sim = birth_lost_device()
    lost = sim.fleet.device(DEVICE_ID)
    done = controller.wait_task(task["id"], timeout=30)
    assert done["status"] == "succeeded" and done["result"]["message"] == "sent while it was away", done
    device = controller.wait_device(DEVICE_ID, "online")
    assert device["session_id"] == lost.session_id, device
    assert sim.fleet.counters.births == 1  # it did announce itself, where the controller does not look
    assert "whose birth never arrived: taken as born" in controller.process.log_path.read_text()
