"""A `mosquitto_pub` task for a device id the controller has never seen is recorded, and runs
once the device starts (issue 11): real broker, controller and device processes, both brokers.
One broker and controller per broker kind serve the module; each test has device ids of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Broker, Controller, Device, Process, wait_for
from tests.integration.conftest import BROKER_KINDS, start_broker
from tests.integration.test_e2e import events_of, mosquitto_pub

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           _module_processes: list[Process]) -> Broker:
    return start_broker(request.param, tmp_path_factory.mktemp(f"adhoc-{request.param}"), _module_processes)


@pytest.fixture(scope="module")
def controller(broker: Broker, tmp_path_factory: pytest.TempPathFactory, _module_processes: list[Process]) -> Controller:
    instance = Controller(broker, tmp_path_factory.mktemp(f"adhoc-controller-{broker.kind}"), keepalive="5")
    _module_processes.append(instance.process)
    instance.start()
    return instance


def adhoc_tasks(controller: Controller, device_id: str) -> list[dict[str, Any]]:
    response = controller.api.get("/api/v1/tasks", params={"device_id": device_id})
    return [t for t in response.json()["items"] if t["origin"] == "adhoc"]


@pytest.mark.parametrize("with_id", [True, False], ids=["with-id", "without-id"])
def test_task_for_a_never_seen_device_is_recorded_and_runs_when_it_starts(
    broker: Broker, controller: Controller, start_device: Callable[..., Device], with_id: bool
) -> None:
    device_id = "pc-new-id" if with_id else "pc-new"  # one controller serves both variants
    assert controller.device(device_id) is None, "the controller has never seen it"
    body = '"type": "echo", "params": {"message": "before the device existed"}'
    mosquitto_pub(broker, f"devices/{device_id}/tasks", "{" + ('"id": "job-new-1", ' if with_id else "") + body + "}")

    recorded = wait_for(lambda: adhoc_tasks(controller, device_id), 10, what=f"ad hoc task for {device_id} recorded")
    assert len(recorded) == 1 and recorded[0]["status"] == "queued", recorded
    assert recorded[0]["type"] == "echo" and (recorded[0]["id"] == "job-new-1") is with_id
    assert controller.device(device_id) is not None  # the device row exists, offline until its birth

    start_device(device_id)
    done = controller.wait_task(recorded[0]["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["message"] == "before the device existed"
    assert events_of(done)[0] == "accepted" and events_of(done)[-1] == "succeeded"
    assert [t["id"] for t in adhoc_tasks(controller, device_id)] == [done["id"]]  # run once, one record


def test_task_for_an_online_device_is_recorded_once_from_its_events(
    broker: Broker, controller: Controller, start_device: Callable[..., Device]
) -> None:
    start_device("pc-on")
    controller.wait_device("pc-on", "online")
    mosquitto_pub(broker, "devices/pc-on/tasks", '{"type": "echo", "params": {"message": "live"}}')

    done = wait_for(lambda: [t for t in adhoc_tasks(controller, "pc-on") if t["status"] == "succeeded"], 15,
                    what="ad hoc task of pc-on succeeded")
    assert len(adhoc_tasks(controller, "pc-on")) == 1, adhoc_tasks(controller, "pc-on")
    assert done[0]["result"]["message"] == "live"
