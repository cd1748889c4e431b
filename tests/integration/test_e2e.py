"""End to end on real processes, on the embedded amqtt broker and on Mosquitto:
REST → controller → broker → device → results in SQL and REST.

One broker and one controller per broker kind serve the whole module (starting them cost more
than most tests); each test starts its own devices, with ids no other test uses, and stops them
afterwards until the controller shows them offline, so a broadcast of a later test reaches only
its own devices."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from schemas.events import FINAL_STATUSES
from tests.harness import (
    Broker,
    Controller,
    Device,
    MqttProbe,
    Process,
    missing_service,
    wait_for,
)
from tests.integration.conftest import BROKER_KINDS, WITH_CLUSTER, start_broker

pytestmark = pytest.mark.integration
# Every test runs on amqtt and Mosquitto (the `broker` fixture's own params); those whose message
# crosses the cluster in a way the others do not (a result, a fan-out, a will, a retained status
# from another node) run on the 3-node NATS cluster too.
on_the_cluster = pytest.mark.parametrize("broker", WITH_CLUSTER, indirect=True)

FINAL = FINAL_STATUSES


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           _module_processes: list[Process]) -> Broker:
    """One broker of each kind for the module (tests marked `on_the_cluster` add "nats")."""
    return start_broker(request.param, tmp_path_factory.mktemp(f"e2e-{request.param}"), _module_processes)


@pytest.fixture(scope="module")
def controller(broker: Broker, tmp_path_factory: pytest.TempPathFactory, _module_processes: list[Process]) -> Controller:
    instance = Controller(broker, tmp_path_factory.mktemp(f"e2e-controller-{broker.kind}"), keepalive="5")
    _module_processes.append(instance.process)
    instance.start()
    return instance


@pytest.fixture
def start_device(start_device: Callable[..., Device], controller: Controller) -> Iterator[Callable[..., Device]]:
    """conftest's `start_device`; afterwards each device is stopped (its retained shutdown status)
    and seen offline by the shared controller."""
    started: list[Device] = []

    def start(device_id: str, **settings: Any) -> Device:
        started.append(start_device(device_id, **settings))
        return started[-1]

    yield start
    for device in started:
        device.process.stop()
    for device in started:
        try:  # usually at once; 30 s for a NATS cluster on a very busy machine
            controller.wait_device(device.id, "offline", timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {device.process.name}\n{device.process.log_tail(20)}"
                                 f"\n--- controller\n{controller.process.log_tail(40)}") from None


def mosquitto_pub(broker: Broker, topic: str, message: str) -> None:
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        missing_service("mosquitto_pub is not installed (Debian: apt-get install mosquitto-clients)")
    subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic, "-m", message],
        check=True, timeout=10,
    )


def events_of(task: dict) -> list[str]:
    return [e["event"] for e in task["events"]]


@on_the_cluster
def test_rest_task_runs_and_result_is_recorded(controller: Controller, start_device: Callable[..., Device]) -> None:
    start_device("pc-01")
    controller.wait_device("pc-01", "online")

    created = controller.create_task("pc-01", "echo", params={"message": "hello", "data": {"n": 1}})
    assert created["id"] and created["status"]  # may already be past dispatched: the device is fast
    task = controller.wait_task(created["id"])

    assert task["status"] == "succeeded", task
    assert task["result"] == {"message": "hello", "data": {"n": 1}}
    assert events_of(task)[:2] == ["accepted", "started"] and events_of(task)[-1] == "succeeded"
    listed = controller.api.get("/api/v1/tasks", params={"device_id": "pc-01"}).json()
    assert [t["id"] for t in listed["items"]] == [created["id"]]

    ping = controller.wait_task(controller.create_task("pc-01", "ping")["id"])
    assert ping["status"] == "succeeded"
    assert ping["result"]["facts"]["task_types"] and "ping" in ping["result"]["facts"]["task_types"]
    device = controller.device("pc-01")
    assert device["facts"]["hostname"] and device["session_id"]


def test_adhoc_mosquitto_pub_task_is_executed_and_recorded(
    broker: Broker, controller: Controller, start_device: Callable[..., Device]
) -> None:
    start_device("pc-02")
    controller.wait_device("pc-02", "online")

    mosquitto_pub(broker, "devices/pc-02/tasks", '{"type": "echo", "params": {"message": "from an operator"}}')

    def adhoc_done() -> dict | None:
        items = controller.api.get("/api/v1/tasks", params={"device_id": "pc-02"}).json()["items"]
        done = [t for t in items if t["origin"] == "adhoc" and t["status"] == "succeeded"]
        return done[0] if done else None

    task = wait_for(adhoc_done, 15, what="ad hoc task recorded as succeeded")
    assert task["type"] == "echo" and task["result"]["message"] == "from an operator"
    assert events_of(controller.task(task["id"]))[-1] == "succeeded"


@on_the_cluster
def test_broadcast_reaches_every_connected_device(
    broker: Broker, controller: Controller, start_device: Callable[..., Device]
) -> None:
    ids = ["pc-b1", "pc-b2", "pc-b3"]
    devices = [start_device(device_id, groups=["lab"] if device_id != "pc-b3" else []) for device_id in ids]
    for device_id in ids:
        controller.wait_device(device_id, "online")
    # Declaring a group (FLEET_GROUPS) is no membership: the controller sets it, and the device
    # subscribes to the group's topic once its desired config names it.
    for device_id in ids[:2]:
        assert controller.api.put(f"/api/v1/devices/{device_id}/groups", json={"groups": ["lab"]}).status_code == 200
        wait_for(lambda d=device_id: ((controller.api.get(f"/api/v1/devices/{d}/config").json().get("reported") or {})
                                      .get("groups")) == ["lab"], 15, what=f"{device_id} subscribed to lab")

    response = controller.api.post("/api/v1/broadcasts", json={"type": "echo", "params": {"message": "all"}})
    assert response.status_code == 201, response.text
    broadcast = response.json()
    assert sorted(broadcast["task_ids"]) == sorted(f"{broadcast['id']}:{d}" for d in ids)
    for task_id in broadcast["task_ids"]:
        assert controller.wait_task(task_id)["status"] == "succeeded"

    group = controller.api.post("/api/v1/broadcasts", json={"type": "ping", "group": "lab"}).json()
    assert sorted(group["task_ids"]) == sorted(f"{group['id']}:{d}" for d in ["pc-b1", "pc-b2"])
    for task_id in group["task_ids"]:
        assert controller.wait_task(task_id)["status"] == "succeeded"

    # An operator's hand-written broadcast without an id is run and recorded by every device.
    mosquitto_pub(broker, "fleet/broadcast/tasks", '{"type": "echo", "params": {"message": "by hand"}}')

    def recorded() -> list[dict]:
        items = controller.api.get("/api/v1/tasks", params={"limit": 100}).json()["items"]
        runs = [t for t in items if t.get("result") and t["result"].get("message") == "by hand"]
        return runs if sorted(t["device_id"] for t in runs) == ids else []

    runs = wait_for(recorded, 15, what="hand-written broadcast run by all three devices")
    assert {t["origin"] for t in runs} == {"broadcast"}

    # With an id, the runs are grouped under it and sending it again runs nothing twice.
    for _ in range(2):
        mosquitto_pub(broker, "fleet/broadcast/tasks", '{"id": "bc-7", "type": "echo", "params": {"message": "once"}}')
    for device_id in ids:
        assert controller.wait_task(f"bc-7:{device_id}")["status"] == "succeeded"
    assert all(d.executions(f"bc-7:{d.id}") == 1 for d in devices)


@pytest.mark.serial  # 3 s from the kill to offline: run alone (tests/run.sh)
@on_the_cluster
def test_device_killed_is_offline_within_one_and_a_half_keepalives(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    keepalive = 2
    device = start_device("pc-03", keepalive=str(keepalive))
    online = controller.wait_device("pc-03", "online")

    device.kill()
    killed_at = time.monotonic()
    controller.wait_device("pc-03", "offline", timeout=1.5 * keepalive)
    elapsed = time.monotonic() - killed_at
    assert elapsed <= 1.5 * keepalive

    history = controller.api.get("/api/v1/devices/pc-03/connections").json()
    assert history[0]["state"] == "offline" and history[0]["session_id"] == online["session_id"]


def test_task_created_while_offline_runs_once_after_reconnect(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    device = start_device("pc-04")
    controller.wait_device("pc-04", "online")
    device.kill()
    controller.wait_device("pc-04", "offline")

    created = controller.create_task("pc-04", "echo", params={"message": "while you were away"})
    time.sleep(0.5)  # give a wrongly delivered task the chance to show up
    assert controller.task(created["id"])["status"] in {"queued", "dispatched"}

    device.start()
    task = controller.wait_task(created["id"])
    assert task["status"] == "succeeded" and task["result"]["message"] == "while you were away"
    assert device.executions(created["id"]) == 1
    assert events_of(task).count("started") == 1


def test_same_task_id_delivered_twice_runs_once(
    controller: Controller, start_device: Callable[..., Device], probe: Callable[..., MqttProbe]
) -> None:
    device = start_device("pc-05")
    controller.wait_device("pc-05", "online")
    watcher = probe("devices/pc-05/results")
    envelope = json.dumps({"id": "dup-task-1", "type": "sleep", "params": {"seconds": 0.2, "steps": 2}})

    watcher.publish("devices/pc-05/tasks", envelope)
    wait_for(lambda: any(m["event"] == "succeeded" for m in watcher.json_messages("devices/pc-05/results")), 10, what="first run done")
    watcher.publish("devices/pc-05/tasks", envelope)
    replay = wait_for(
        lambda: [m for m in watcher.json_messages("devices/pc-05/results") if m.get("replay")], 10, what="replayed outcome of the duplicate"
    )[0]

    assert replay["event"] == "succeeded" and replay["task_id"] == "dup-task-1"
    assert device.executions("dup-task-1") == 1
    assert [m["event"] for m in watcher.json_messages("devices/pc-05/results")].count("started") == 1
    task = controller.wait_task("dup-task-1")
    assert task["status"] == "succeeded" and events_of(task).count("started") == 1


def test_bad_input_on_the_task_topic_is_rejected_and_the_device_keeps_serving(
    controller: Controller, start_device: Callable[..., Device], probe: Callable[..., MqttProbe]
) -> None:
    start_device("pc-06", max_payload_bytes="2048")
    controller.wait_device("pc-06", "online")
    watcher = probe("devices/pc-06/results")
    bad = {
        "invalid_json": b"{not json",
        "invalid_task": json.dumps({"id": "bad-schema", "type": "echo", "params": "nope", "colour": "red"}).encode(),
        "unknown_type": json.dumps({"id": "bad-type", "type": "teleport"}).encode(),
        "payload_too_large": json.dumps({"type": "echo", "params": {"message": "x" * 5000}}).encode(),
        "invalid_params": json.dumps({"id": "bad-params", "type": "sleep", "params": {"seconds": "long"}}).encode(),
    }
    for payload in bad.values():
        watcher.publish("devices/pc-06/tasks", payload)

    def rejections() -> dict[str, dict]:
        results = watcher.json_messages("devices/pc-06/results")
        found = {m["error"]["code"]: m for m in results if m["event"] == "rejected"}
        return found if set(found) >= set(bad) else {}

    found = wait_for(rejections, 10, what="one rejected event per bad message")
    assert "params" in found["invalid_task"]["error"]["message"] and "colour" in found["invalid_task"]["error"]["message"]
    assert found["invalid_task"]["task_id"] == "bad-schema"
    assert "teleport" in found["unknown_type"]["error"]["message"]
    assert "2048" in found["payload_too_large"]["error"]["message"]
    assert "seconds" in found["invalid_params"]["error"]["message"]

    # The controller recorded the rejections, and the device still serves.
    assert controller.wait_task("bad-type")["status"] == "rejected"
    assert controller.wait_task(controller.create_task("pc-06", "ping")["id"])["status"] == "succeeded"


@on_the_cluster
def test_stale_will_never_marks_a_live_device_offline(
    controller: Controller, start_device: Callable[..., Device], probe: Callable[..., MqttProbe]
) -> None:
    start_device("pc-07")
    online = controller.wait_device("pc-07", "online")
    watcher = probe("devices/pc-07/status")
    stale = {"device_id": "pc-07", "state": "offline", "session_id": "old-session-0", "reason": "connection lost"}

    watcher.publish("devices/pc-07/status", json.dumps(stale), retain=True)

    # The device answers the stale will with a fresh birth, so the retained status is right again.
    wait_for(
        lambda: (msgs := watcher.json_messages("devices/pc-07/status")) and msgs[-1]["state"] == "online",
        10, what="device re-announcing itself after a stale will",
    )
    device = controller.device("pc-07")
    assert device["status"] == "online" and device["session_id"] == online["session_id"]


def test_malformed_rest_bodies_get_422_naming_the_field(controller: Controller) -> None:
    cases = [
        ({"type": "ping"}, "device_id"),
        ({"device_id": "pc 1/+", "type": "ping"}, "device_id"),
        ({"device_id": "pc-1", "type": "ping", "timeout": "soon"}, "timeout"),
        ({"device_id": "pc-1", "type": "ping", "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        response = controller.api.post("/api/v1/tasks", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in json.dumps(response.json()["detail"]), response.text
    response = controller.api.post("/api/v1/tasks", content=b"{broken", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert controller.api.get("/api/v1/tasks/nope").status_code == 404
