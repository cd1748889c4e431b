"""Messages nobody can read never leave a task without an answer (real broker, controller and
device; hostile payloads published with paho): the device rejects a task nested too deeply or
holding a lone surrogate, under the sender's id; the controller counts an event it cannot read
and fails the task it would have ended instead of leaving it `running`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Controller, Device, MqttProbe, wait_for

pytestmark = pytest.mark.integration


def _nested(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(levels):
        node["a"] = {}
        node = node["a"]
    return root


@pytest.mark.parametrize("broker", ["amqtt"], indirect=True)
def test_device_rejects_what_it_cannot_carry(
    controller: Controller, start_device: Callable[..., Device], probe: Callable[..., MqttProbe]
) -> None:
    start_device("pc-01")
    controller.wait_device("pc-01", "online")
    wire = probe("devices/pc-01/tasks", "devices/pc-01/results")
    deep = json.dumps({"id": "deep-1", "type": "echo", "params": {"data": _nested(200)}})
    lone = '{"id": "surr-1", "type": "echo", "params": {"message": "\\ud800"}}'
    lone_key = '{"id": "surr-2", "type": "echo", "params": {"data": {"\\udfff": 1}}}'
    for payload in (deep, lone, lone_key):
        wire.publish("devices/pc-01/tasks", payload)
    for task_id, words in (("deep-1", "32 levels"), ("surr-1", "surrogate"), ("surr-2", "surrogate")):
        task = controller.wait_task(task_id, timeout=15)
        assert task["status"] == "rejected", task
        assert task["error"]["code"] == "invalid_json" and words in task["error"]["message"], task["error"]
    events = [e for e in wire.json_messages("devices/pc-01/results") if e.get("event") == "rejected"]
    assert {e["task_id"] for e in events} >= {"deep-1", "surr-1", "surr-2"}
    # The device is unharmed: a normal task still runs.
    assert controller.wait_task(controller.create_task("pc-01", "echo", params={"message": "ok"})["id"])["status"] == "succeeded"


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"], indirect=True)
def test_unreadable_final_event_fails_the_task(
    controller: Controller, start_device: Callable[..., Device], probe: Callable[..., MqttProbe]
) -> None:
    start_device("pc-01")
    controller.wait_device("pc-01", "online")
    task = controller.create_task("pc-01", "sleep", params={"seconds": 30})
    wait_for(lambda: (controller.task(task["id"]) or {}).get("status") == "running", 15, what="task running")
    before = controller.api.get("/healthz").json()["invalid_messages"]
    wire = probe("devices/pc-01/results")
    # What a device whose handler returned a result nested 300 levels deep would send.
    event = {"task_id": task["id"], "device_id": "pc-01", "event": "succeeded", "seq": 50, "attempt": 1,
             "at": "2026-01-01T00:00:00Z", "session_id": "x", "result": _nested(300)}
    wire.publish("devices/pc-01/results", json.dumps(event))
    wire.publish("devices/pc-01/results", b"\xff\xfe not even text")
    done = controller.wait_task(task["id"], timeout=15)
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_event", done
    assert "cannot read" in done["error"]["message"]
    wait_for(lambda: controller.api.get("/healthz").json()["invalid_messages"] >= before + 2, 10,
             what="both dropped messages counted")
    print(f"invalid_messages {before} -> {controller.api.get('/healthz').json()['invalid_messages']}")
    # Another device's unreadable event cannot fail pc-01's tasks.
    other = controller.create_task("pc-01", "sleep", params={"seconds": 30})
    wait_for(lambda: (controller.task(other["id"]) or {}).get("status") == "running", 15, what="second task running")
    wire.publish("devices/pc-02/results", json.dumps({**event, "task_id": other["id"], "device_id": "pc-02"}))
    wait_for(lambda: controller.api.get("/healthz").json()["invalid_messages"] >= before + 3, 10, what="counted")
    assert controller.task(other["id"])["status"] == "running"
