"""A `mosquitto_pub` task for a device id the controller has never seen is recorded, and runs
once the device starts (issue 11): real broker, controller and device processes, both brokers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Broker, Controller, Device, wait_for
from tests.integration.test_e2e import events_of, mosquitto_pub

pytestmark = pytest.mark.integration


def adhoc_tasks(controller: Controller, device_id: str) -> list[dict[str, Any]]:
    response = controller.api.get("/api/v1/tasks", params={"device_id": device_id})
    return [t for t in response.json()["items"] if t["origin"] == "adhoc"]


@pytest.mark.parametrize("with_id", [True, False], ids=["with-id", "without-id"])
def test_task_for_a_never_seen_device_is_recorded_and_runs_when_it_starts(
    broker: Broker, controller: Controller, start_device: Callable[..., Device], with_id: bool
) -> None:
    body = '"type": "echo", "params": {"message": "before the device existed"}'
    mosquitto_pub(broker, "devices/pc-new/tasks", "{" + ('"id": "job-new-1", ' if with_id else "") + body + "}")

    recorded = wait_for(lambda: adhoc_tasks(controller, "pc-new"), 10, what="ad hoc task for pc-new recorded")
    assert len(recorded) == 1 and recorded[0]["status"] == "queued", recorded
    assert recorded[0]["type"] == "echo" and (recorded[0]["id"] == "job-new-1") is with_id
    assert controller.device("pc-new") is not None  # the device row exists, offline until its birth

    start_device("pc-new")
    done = controller.wait_task(recorded[0]["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["message"] == "before the device existed"
    assert events_of(done)[0] == "accepted" and events_of(done)[-1] == "succeeded"
    assert [t["id"] for t in adhoc_tasks(controller, "pc-new")] == [done["id"]]  # run once, one record


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
