"""A compromised device against signed tasks (issue 12, hole 2), on the embedded broker and on
Mosquitto, with real provisioned logins: device C's stolen login (the attacker runs it instead
of C's daemon) captures a task the controller signed for C and re-publishes it to device B's
topic and to the broadcast topic, and signs tasks of its own. Its own login is stopped by the broker's ACL; the same messages sent with a
login that may publish tasks (a stolen operator password, or a broker without ACLs) reach B,
which refuses each one with a `rejected` event and runs none of them (B's journal)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.connection import BrokerAddress, create_client
from schemas.signing import Signer
from schemas.tasks import TaskEnvelope
from tests.harness import Device, Process, wait_for
from tests.logins import LockedFleet
from tests.ports import free_port

pytestmark = pytest.mark.integration


class Login:
    """A raw MQTT login that records every message it receives (topic, JSON payload)."""

    def __init__(self, port: int, user: str, password: str, *topics: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = create_client(BrokerAddress.from_url(f"mqtt://{user}:{password}@127.0.0.1:{port}"),
                                    f"attack-{user}-{free_port()}")
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe([(t, 1) for t in topics]) if topics else self._subscribed.set()
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), f"{user} could not connect and subscribe"

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def received(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for t, payload in self.messages if t == topic]

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rejection(login: Login, topic: str, task_id: str) -> Any:
    """The `rejected` event's error code for `task_id` seen on `topic`, or None yet."""
    for event in login.received(topic):
        if event.get("task_id") == task_id and event.get("event") == "rejected":
            return event["error"]["code"]
    return None


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_a_compromised_device_cannot_retarget_or_sign_tasks(kind: str, tmp_path: Path, _processes: list[Process]) -> None:
    fleet = LockedFleet(kind, tmp_path, _processes, task_signing="true")
    broker, controller, operator_secret = fleet.broker, fleet.controller, fleet.operator_secret
    key = controller.api.get("/api/v1/signatures/key").json()

    secrets = {}
    devices: dict[str, Device] = {}
    for name in ("dev-a", "dev-b"):
        made = controller.api.post("/api/v1/identities", json={"name": name, "role": "device"})
        assert made.status_code == 201, made.text
        secrets[name] = made.json()["secret"]
        devices[name] = Device(name, broker, tmp_path, mqtt_url=f"mqtt://{name}:{secrets[name]}@127.0.0.1:{broker.port}",
                               keepalive="5", task_signing_public_keys=[key["public_key"]])
        _processes.append(devices[name].process)
        devices[name].start()
    for name in devices:
        controller.wait_device(name, "online")
    assert not any(b"PRIVATE KEY" in p.read_bytes() for d in devices.values() for p in d.data_dir.rglob("*") if p.is_file())

    # The stolen login of C (whose daemon the attacker replaced: on Mosquitto one login is one
    # connection, use_username_as_clientid) announces C online and captures a task signed for C.
    made = controller.api.post("/api/v1/identities", json={"name": "dev-c", "role": "device"})
    assert made.status_code == 201, made.text
    intruder = Login(broker.port, "dev-c", made.json()["secret"], "devices/dev-c/tasks")
    intruder.publish("devices/dev-c/status", {"device_id": "dev-c", "state": "online", "session_id": "stolen-1"})
    controller.wait_device("dev-c", "online")
    task = controller.create_task("dev-c", "append", params={"line": "for C only"})
    captured = wait_for(lambda: next((m for m in intruder.received("devices/dev-c/tasks") if m.get("id") == task["id"]), None),
                        10, what="the intruder capturing C's signed task")
    assert captured["target"] == "devices/dev-c/tasks" and captured["key_id"] == key["key_id"]

    # With C's own login: the broker's ACL drops both.
    intruder.publish("devices/dev-b/tasks", captured)
    intruder.publish("fleet/broadcast/tasks", captured)

    # With a login that may publish tasks, C's task reaches B: B refuses it on its topic and on the broadcast.
    watcher = Login(broker.port, "ops", operator_secret, "devices/+/results")
    watcher.publish("devices/dev-b/tasks", captured)
    watcher.publish("fleet/broadcast/tasks", captured)
    # Tasks A signs itself: with a key of its own, and with its own key passed off under the controller's id.
    own = Signer(Ed25519PrivateKey.generate())
    forged = own.sign(TaskEnvelope(id="forged-own-key", type="append", params={"line": "pwned"}), "devices/dev-b/tasks")
    watcher.publish("devices/dev-b/tasks", forged.model_dump(mode="json", exclude_none=True))
    passed_off = own.sign(TaskEnvelope(id="forged-key-id", type="append", params={"line": "pwned"}), "devices/dev-b/tasks")
    passed_off = passed_off.model_copy(update={"key_id": key["key_id"]})
    watcher.publish("devices/dev-b/tasks", passed_off.model_dump(mode="json", exclude_none=True))

    results_b = "devices/dev-b/results"
    expected = {task["id"]: "wrong_target", f"{task['id']}:dev-b": "wrong_target",
                "forged-own-key": "unknown_signing_key", "forged-key-id": "invalid_signature"}
    wait_for(lambda: all(rejection(watcher, results_b, i) is not None for i in expected), 15,
             what="B's rejected events")
    assert {i: rejection(watcher, results_b, i) for i in expected} == expected
    for task_id in expected:
        assert devices["dev-b"].executions(task_id) == 0, task_id
    assert not (devices["dev-b"].data_dir / "appended-dev-b.log").exists()
    # A refuses its run of the re-published broadcast too.
    wait_for(lambda: rejection(watcher, "devices/dev-a/results", f"{task['id']}:dev-a") == "wrong_target", 15,
             what="A refusing the broadcast copy")
    assert devices["dev-a"].executions(f"{task['id']}:dev-a") == 0
    assert not (devices["dev-a"].data_dir / "appended-dev-a.log").exists()
    # B still runs what the controller signs for it.
    assert controller.wait_task(controller.create_task("dev-b", "echo", params={"message": "real"})["id"])["status"] == "succeeded"
    intruder.close()
    watcher.close()
