"""Device identities and topic ACLs on the embedded broker, a real Mosquitto (issue 5) and a real
nats-server (issue 14, the controller writing its authorization file): the
controller provisions two devices, writes the password and ACL files and reloads the broker; device A, holding its own
credentials, cannot read B's tasks, forge B's results or status, or command anyone; a revoked
device and a wrong password are refused; the controller's records are unchanged by every
attempt; no secret appears in any log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Device, Process, wait_for
from tests.logins import LockedFleet, RawClient

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto", "nats"])
def test_device_acls_revocation_and_secrets(kind: str, tmp_path: Path, _processes: list[Process]) -> None:
    fleet = LockedFleet(kind, tmp_path, _processes)
    broker, controller, operator_secret = fleet.broker, fleet.controller, fleet.operator_secret
    controller_secret = fleet.controller_secret

    secrets = {"controller": controller_secret, "operator": operator_secret}
    devices: dict[str, Device] = {}
    for name, groups in (("dev-a", ["lab"]), ("dev-b", ["field"])):
        made = controller.api.post("/api/v1/identities", json={"name": name, "role": "device", "groups": groups})
        assert made.status_code == 201, made.text
        assert ("reads them as they change" if kind == "amqtt" else "reloaded") in made.json()["broker_files"]
        secrets[name] = made.json()["secret"]
        device = Device(name, broker, tmp_path, mqtt_url=f"mqtt://{name}:{secrets[name]}@127.0.0.1:{broker.port}",
                        groups=groups, keepalive="5")
        _processes.append(device.process)
        device.start()
        devices[name] = device
    for name in devices:
        controller.wait_device(name, "online")
    files = controller.api.get("/api/v1/identities/broker-files").json()  # for a broker the controller does not manage
    assert "user dev-a" in files["acl_file"] and files["nats_left_out"] == []
    assert '{user: "dev-a"' in files["nats_auth_file"] and '"devices.dev-a.tasks"' in files["nats_auth_file"]
    assert controller.wait_task(controller.create_task("dev-b", "ping")["id"])["status"] == "succeeded"
    done = controller.wait_task(controller.create_task("dev-b", "echo", params={"message": "real"})["id"])

    # Device A, with its own valid credentials, tries what a compromised PC would.
    intruder = RawClient(broker.port, "dev-a", secrets["dev-a"])
    assert intruder.connected.wait(10) and intruder.refused is None
    # Mosquitto 2.0 acknowledges a subscription its ACL denies, then delivers nothing on it.
    intruder.subscribe("devices/dev-b/tasks", "devices/+/results", "devices/dev-b/status", "fleet/groups/field/tasks")
    status_before = controller.device("dev-b")
    forged_event = {"task_id": done["id"], "device_id": "dev-b", "event": "failed", "seq": 99, "at": "2026-01-01T00:00:00Z",
                    "session_id": "x", "error": {"code": "forged", "message": "forged"}}
    intruder.publish("devices/dev-b/results", forged_event)
    intruder.publish("devices/dev-b/status", {"device_id": "dev-b", "state": "offline",
                                               "session_id": status_before["session_id"]})  # type: ignore[index]
    intruder.publish("devices/dev-b/tasks", {"id": "forged-task", "type": "append", "params": {"line": "pwned"}})
    intruder.publish("fleet/broadcast/tasks", {"id": "forged-broadcast", "type": "append"})

    marker = controller.wait_task(controller.create_task("dev-b", "echo", params={"message": "after"})["id"])
    assert marker["status"] == "succeeded"
    # Nothing it may not read, not even B's tasks sent meanwhile.
    foreign = [topic for topic in intruder.received if not topic.startswith("devices/dev-a/")]
    assert foreign == [], intruder.received
    unchanged = controller.task(done["id"])
    assert unchanged is not None and (unchanged["status"], unchanged["events"]) == ("succeeded", done["events"])
    assert controller.device("dev-b")["status"] == "online"  # type: ignore[index]
    assert controller.api.get("/api/v1/tasks/forged-task").status_code == 404
    assert devices["dev-b"].executions("forged-task") == 0
    assert not any((devices[n].data_dir / f"appended-{n}.log").exists() for n in devices)
    intruder.close()

    # An operator may command devices by hand.
    operator = RawClient(broker.port, "ops", operator_secret)
    assert operator.connected.wait(10) and operator.refused is None
    operator.publish("devices/dev-b/tasks", {"id": "by-operator", "type": "echo", "params": {"message": "ops"}})
    assert controller.wait_task("by-operator")["status"] == "succeeded"
    operator.close()

    # Revoked: refused from its next connection, without restarting anything.
    assert controller.api.delete("/api/v1/identities/dev-a").status_code == 200

    def refused_now() -> bool:  # the broker applies the new files a moment later (SIGHUP / file change)
        retry = RawClient(broker.port, "dev-a", secrets["dev-a"])
        try:
            return retry.connected.wait(10) and retry.refused is not None
        finally:
            retry.close()

    wait_for(refused_now, 15, 0.2, "the revoked login refused")
    assert controller.device("dev-a")["status"] == "offline"  # type: ignore[index]
    assert controller.api.get("/api/v1/devices/dev-a/connections").json()[0]["reason"] == "revoked"
    devices["dev-a"].kill()
    devices["dev-a"].start()
    wait_for(lambda: "not authori" in devices["dev-a"].process.log_path.read_text().lower(), 15,
             what="the revoked daemon logging why it cannot connect")
    assert controller.device("dev-a")["status"] == "offline"  # type: ignore[index]
    wrong = RawClient(broker.port, "dev-b", "not-the-password")
    assert wrong.connected.wait(10) and wrong.refused is not None
    wrong.close()

    logs = [p.log_path.read_text(errors="replace") for p in _processes if p.log_path.exists()]
    for label, secret in secrets.items():
        assert not any(secret in text for text in logs), f"the {label} secret appears in a log"
