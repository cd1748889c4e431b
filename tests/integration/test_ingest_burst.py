"""A burst of results is recorded in full and fast (real broker and controller processes; the
device is a raw paho client speaking the wire contract): the controller's network thread only
queues, its ingest writer records in batches, and /healthz shows the ingest queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest

from schemas.common import utcnow
from tests.harness import Controller, MqttProbe, wait_for

pytestmark = pytest.mark.integration

TASKS = 100
KINDS = ("accepted", "started", "succeeded")  # 3 events per task: 300 results in the burst


def _birth(device_id: str) -> str:
    return json.dumps({"device_id": device_id, "state": "online", "session_id": "sim-s1", "at": utcnow().isoformat(),
                       "facts": {"name": device_id, "version": "0.1.0", "hostname": device_id, "os": "Linux",
                                 "python": "3.11", "task_types": ["echo"], "groups": [], "keepalive": 30}})


def test_a_burst_of_results_is_recorded(controller: Controller, probe: Callable[..., MqttProbe]) -> None:
    wire = probe("devices/sim-01/tasks")
    wire.publish("devices/sim-01/status", _birth("sim-01"), retain=True)
    controller.wait_device("sim-01", "online")
    ids = [controller.create_task("sim-01", "echo", params={"message": str(n)})["id"] for n in range(TASKS)]
    started = time.monotonic()
    infos: list[mqtt.MQTTMessageInfo] = []
    for task_id in ids:
        for seq, kind in enumerate(KINDS):
            event = {"task_id": task_id, "device_id": "sim-01", "event": kind, "seq": seq, "attempt": 1,
                     "at": utcnow().isoformat(), "session_id": "sim-s1", **({"result": {}} if kind == "succeeded" else {})}
            infos.append(wire.client.publish("devices/sim-01/results", json.dumps(event), qos=1))
    for info in infos:
        info.wait_for_publish(10)

    def succeeded() -> int:
        return int(controller.api.get("/api/v1/tasks", params={"device_id": "sim-01", "status": "succeeded",
                                                               "limit": 1}).json()["total"])

    wait_for(lambda: succeeded() == TASKS, 10, what=f"all {TASKS} tasks succeeded")
    print(f"{len(infos)} results recorded {time.monotonic() - started:.2f} s after the burst began")
    health = controller.api.get("/healthz").json()
    assert health["ingest_dropped"] == 0 and health["ingest_high_water"] >= 1, health
    wait_for(lambda: controller.api.get("/healthz").json()["ingest_queue"] == 0, 5, what="the ingest queue empty")
    timeline = controller.task(ids[-1])
    assert timeline is not None and [e["event"] for e in timeline["events"]] == list(KINDS), timeline
