"""A compromised PC (issue 12): the attacker holds device `dev-a`'s real login and password and
attacks a real fleet (broker, controller, victim device `dev-b`) on the embedded broker and on
Mosquitto. Each probe is refused, and the victim's tasks and presence are unchanged, as seen
through the controller's REST API and the victim's own journal:

- wills on each of the victim's topics and on the broadcast topic (refused at CONNECT);
- a connection with the victim's client id, or the controller's (no one is knocked off);
- squatting the victim's broadcast run id `<broadcast>:dev-b` (the victim's run stays its own);
- a retained task message (never run again when the device reconnects).

Signed tasks re-targeted to another device or the broadcast topic, and tasks a device signs
itself, are played in tests/integration/test_signing_attacks.py (they need a signing fleet).

One fleet per broker serves every probe of the module (tests are independent of order: each
probe uses its own ids and checks the victim against the state it found).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker.connection import BrokerAddress, create_client
from tests.harness import Broker, Controller, Device, Process, wait_for
from tests.logins import LockedFleet, RawClient

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 5  # CONNACK return code [MQTT-3.2.2-3]


@dataclass
class Fleet:
    kind: str
    broker: Broker
    controller: Controller
    victim: Device
    secrets: dict[str, str]
    processes: list[Process] = field(default_factory=list)


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    kind: str = request.param
    work = tmp_path_factory.mktemp(f"attack-{kind}")
    processes: list[Process] = []
    try:
        locked = LockedFleet(kind, work, processes)
        broker, controller = locked.broker, locked.controller
        secrets = {"fleet-controller": locked.controller_secret, "ops": locked.operator_secret}
        for name, groups in (("dev-a", ["lab"]), ("dev-b", ["lab"])):
            made = controller.api.post("/api/v1/identities", json={"name": name, "role": "device", "groups": groups})
            assert made.status_code == 201, made.text
            secrets[name] = made.json()["secret"]
        victim = Device("dev-b", broker, work, mqtt_url=f"mqtt://dev-b:{secrets['dev-b']}@127.0.0.1:{broker.port}",
                        groups=["lab"], keepalive="5")
        processes.append(victim.process)
        victim.start()
        controller.wait_device("dev-b", "online")
        yield Fleet(kind, broker, controller, victim, secrets, processes)
    finally:
        for process in processes:
            process.kill()


# --- the attacker's tools -----------------------------------------------------------------------

def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect_with_will(port: int, user: str, password: str, will_topic: str, will: dict[str, Any], *,
                      retain: bool = False, client_id: str | None = None) -> int | None:
    """A hand-made CONNECT with a will at QoS 1; the CONNACK code (None: closed without one).
    The socket is then dropped without a DISCONNECT, which is what makes a broker publish a will."""
    flags = 0x80 | 0x40 | 0x08 | 0x04 | 0x02 | (0x20 if retain else 0)
    body = (_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + _string(client_id or f"attacker-{uuid.uuid4().hex[:8]}")
            + _string(will_topic) + _string(json.dumps(will)) + _string(user) + _string(password))
    length, remaining = b"", len(body)
    while True:
        remaining, digit = remaining // 128, remaining % 128
        length += bytes([digit | (0x80 if remaining else 0)])
        if not remaining:
            break
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x10" + length + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                return None
            connack += chunk
    return connack[3]


class Login:
    """A paho connection with a chosen client id; `refused`: the CONNACK's failure, if any."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.done = wait_connack = threading.Event()
        self.refused: Any = None
        self.client = create_client(BrokerAddress.from_url(f"mqtt://{user}:{password}@127.0.0.1:{port}"), client_id)
        self.client.reconnect_delay_set(60, 60)

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.refused = reason if reason.is_failure else None
            wait_connack.set()

        self.client.on_connect = on_connect
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.done.wait(10), f"no CONNACK for client id {client_id}"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- what the victim looks like -------------------------------------------------------------------

@dataclass(frozen=True)
class VictimState:
    session_id: str
    connections: int
    controller_drops: int  # times the controller lost its broker connection (from its log)


def victim_state(fleet: Fleet) -> VictimState:
    device = fleet.controller.device("dev-b")
    assert device is not None and device["status"] == "online", device
    connections = fleet.controller.api.get("/api/v1/devices/dev-b/connections")
    assert connections.status_code == 200, connections.text
    log = fleet.controller.process.log_path.read_text(errors="replace")
    return VictimState(device["session_id"], len(connections.json()), log.count("disconnected from the MQTT broker"))


def assert_victim_unchanged(fleet: Fleet, before: VictimState) -> None:
    """A task sent after the probe runs on the victim (so whatever the probe set off has been
    handled by then), and the victim's presence is what it was: same connection, no new entry;
    the controller's connection was never dropped either."""
    marker = fleet.controller.create_task("dev-b", "echo", params={"message": "after the probe"})
    assert fleet.controller.wait_task(marker["id"])["status"] == "succeeded"
    assert victim_state(fleet) == before


def appended(fleet: Fleet, text: str) -> int:
    """How many times the victim's `append` handler wrote `text` (its real file)."""
    path = fleet.victim.data_dir / "appended-dev-b.log"
    return path.read_text().count(f"\t{text}\n") if path.exists() else 0


# --- probes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["devices/dev-b/tasks", "fleet/broadcast/tasks", "fleet/groups/lab/tasks",
                                    "devices/dev-b/results", "devices/dev-b/status"])
def test_will_on_a_foreign_topic_is_refused(fleet: Fleet, target: str) -> None:
    before = victim_state(fleet)
    running = fleet.controller.create_task("dev-b", "sleep", params={"seconds": 30})
    fleet.controller.wait_task(running["id"], {"running"})
    token = uuid.uuid4().hex[:8]
    wills: dict[str, tuple[dict[str, Any], bool]] = {
        "devices/dev-b/tasks": ({"id": f"will-{token}", "type": "append", "params": {"line": token}}, False),
        "fleet/broadcast/tasks": ({"id": f"will-{token}", "type": "append", "params": {"line": token}}, False),
        "fleet/groups/lab/tasks": ({"id": f"will-{token}", "type": "append", "params": {"line": token}}, False),
        "devices/dev-b/results": ({"task_id": running["id"], "device_id": "dev-b", "event": "succeeded", "seq": 999,
                                   "at": "2026-01-01T00:00:00Z", "session_id": before.session_id, "result": {"forged": True}}, False),
        "devices/dev-b/status": ({"device_id": "dev-b", "state": "offline", "session_id": before.session_id}, True),
    }
    will, retain = wills[target]
    code = connect_with_will(fleet.broker.port, "dev-a", fleet.secrets["dev-a"], target, will, retain=retain)

    try:
        assert_victim_unchanged(fleet, before)
        assert fleet.controller.task(running["id"])["status"] == "running"  # type: ignore[index]
        assert appended(fleet, token) == 0
        for task_id in (f"will-{token}", f"will-{token}:dev-b"):
            assert fleet.victim.executions(task_id) == 0
            assert fleet.controller.api.get(f"/api/v1/tasks/{task_id}").status_code == 404
        # The embedded broker refuses the CONNECT; Mosquitto 2.0.11 accepts it and drops the will
        # when it would publish it (its ACL check), which the checks above have just shown.
        assert code == (NOT_AUTHORIZED if fleet.kind == "amqtt" else 0), f"CONNACK {code} for a will on {target}"
        if fleet.kind == "amqtt":
            wait_for(lambda: f"its will on {target} is not allowed" in fleet.broker.process.log_path.read_text(), 10,
                     what="the refused will in the broker's log")
    finally:
        fleet.controller.api.post(f"/api/v1/tasks/{running['id']}/cancel")
        fleet.controller.wait_task(running["id"])


@pytest.mark.parametrize("whose", ["victim", "controller"])
def test_client_id_takeover_is_refused(fleet: Fleet, whose: str) -> None:
    before = victim_state(fleet)
    taken = "dev-b" if whose == "victim" else f"controller-{fleet.controller.port}"  # the harness's controller id
    intruder = Login(fleet.broker.port, "dev-a", fleet.secrets["dev-a"], client_id=taken)
    try:
        if fleet.kind == "amqtt":  # a client id held by another login's session is never taken over
            assert intruder.refused is not None, f"the embedded broker let dev-a connect as {taken}"
        # Mosquitto (use_username_as_clientid) admits it as client "dev-a": nobody is knocked off.
        assert_victim_unchanged(fleet, before)  # a controller knocked off would not run this task
        assert fleet.controller.api.get("/healthz").json()["mqtt_connected"] is True
    finally:
        intruder.close()


def test_squatting_the_victims_broadcast_run_is_refused(fleet: Fleet) -> None:
    before = victim_state(fleet)
    broadcast = f"nightly-{uuid.uuid4().hex[:8]}"
    squat, own = f"{broadcast}:dev-b", f"own-{uuid.uuid4().hex[:8]}"
    attacker = RawClient(fleet.broker.port, "dev-a", fleet.secrets["dev-a"])
    try:
        assert attacker.connected.wait(10) and attacker.refused is None
        event: dict[str, Any] = {"device_id": "dev-a", "event": "accepted", "seq": 1, "at": "2026-01-01T00:00:00Z",
                                 "session_id": "squatter"}
        attacker.publish("devices/dev-a/results", {**event, "task_id": squat, "task": {"type": "ping", "broadcast_id": broadcast}})
        attacker.publish("devices/dev-a/results", {**event, "task_id": squat})
        attacker.publish("devices/dev-a/results", {**event, "task_id": own, "task": {"type": "ping"}})
        # The controller handles one device's results in order: once `own` is recorded, so is the squat.
        wait_for(lambda: fleet.controller.task(own) is not None, 15, what="the attacker's own task recorded")
        assert fleet.controller.api.get(f"/api/v1/tasks/{squat}").status_code == 404
    finally:
        attacker.close()

    operator = RawClient(fleet.broker.port, "ops", fleet.secrets["ops"])
    try:
        assert operator.connected.wait(10) and operator.refused is None
        operator.publish("fleet/broadcast/tasks", {"id": broadcast, "type": "ping"})
    finally:
        operator.close()
    run = fleet.controller.wait_task(squat)
    assert (run["device_id"], run["status"]) == ("dev-b", "succeeded"), run
    assert_victim_unchanged(fleet, before)


def test_a_retained_task_never_runs_again(fleet: Fleet) -> None:
    token, topic = uuid.uuid4().hex[:8], "devices/dev-b/tasks"
    operator = RawClient(fleet.broker.port, "ops", fleet.secrets["ops"])
    assert operator.connected.wait(10) and operator.refused is None
    try:
        operator.client.publish(topic, json.dumps({"type": "append", "params": {"line": token}}), qos=1, retain=True).wait_for_publish(10)
        # The embedded broker refuses the message; Mosquitto cannot, and delivers it once, live.
        expected = 0 if fleet.kind == "amqtt" else 1
        if expected:
            wait_for(lambda: appended(fleet, token) == 1, 15, what="the live delivery run once")
        rejected_before = _retained_rejections(fleet)
        fleet.victim.kill()
        fleet.controller.wait_device("dev-b", "offline", timeout=30)
        fleet.victim.start()
        fleet.controller.wait_device("dev-b", "online", timeout=30)
        if fleet.kind == "mosquitto":  # the broker replays it: the device says why it does not run it
            wait_for(lambda: _retained_rejections(fleet) > rejected_before, 15, what="a retained_task rejection")
        assert_victim_unchanged(fleet, victim_state(fleet))
        assert appended(fleet, token) == expected
    finally:
        operator.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # clear it
        operator.close()


def _retained_rejections(fleet: Fleet) -> int:
    page = fleet.controller.api.get("/api/v1/tasks", params={"device_id": "dev-b", "status": "rejected", "limit": 500})
    assert page.status_code == 200, page.text
    found = 0
    for item in page.json()["items"]:
        task = fleet.controller.task(item["id"])
        found += any((e.get("error") or {}).get("code") == "retained_task" for e in (task or {}).get("events", []))
    return found
