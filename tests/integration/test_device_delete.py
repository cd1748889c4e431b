"""Deleting a device (issue 16, docs/architecture.md#housekeeping) on a locked broker (the embedded
broker and a real Mosquitto, password and ACL files kept by the controller), with real device
daemons: the security promise is that after `DELETE /api/v1/devices/{id}` the device's login is
refused, the daemon running with it is knocked off and cannot come back, its running task ends
`canceled`, its retained status is gone, its account is removed, its history stays queryable
(`keep`) or is gone (`purge`), and a daemon that shows up again under that id is ignored until
the device is restored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Controller, Device, Process, wait_for
from tests.logins import LockedFleet, RawClient

pytestmark = pytest.mark.integration


def _provision(controller: Controller, name: str) -> str:
    made = controller.api.post("/api/v1/identities", json={"name": name, "role": "device"})
    assert made.status_code == 201, made.text
    return str(made.json()["secret"])


def _daemon(fleet: LockedFleet, work: Path, processes: list[Process], name: str, secret: str, copy: str = "") -> Device:
    device = Device(name, fleet.broker, work, copy=copy, keepalive="5", heartbeat_interval="1",
                    mqtt_url=f"mqtt://{name}:{secret}@127.0.0.1:{fleet.broker.port}")
    processes.append(device.process)
    device.start()
    return device


def _refused(port: int, name: str, secret: str) -> bool:
    client = RawClient(port, name, secret)
    try:
        return client.connected.wait(10) and client.refused is not None
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_a_deleted_device_is_locked_out_and_stays_deleted(kind: str, tmp_path: Path, _processes: list[Process]) -> None:
    fleet = LockedFleet(kind, tmp_path, _processes)
    controller, port = fleet.controller, fleet.broker.port
    secrets = {name: _provision(controller, name) for name in ("dev-x", "dev-y")}
    daemons = {name: _daemon(fleet, tmp_path, _processes, name, secret) for name, secret in secrets.items()}
    for name in daemons:
        controller.wait_device(name, "online")
    bound = controller.api.post("/api/v1/accounts", json={"name": "acc-x", "platform": "douyin", "device_id": "dev-x"})
    assert bound.status_code == 201, bound.text
    done = controller.wait_task(controller.create_task("dev-x", "ping")["id"])
    running = controller.create_task("dev-x", "sleep", params={"seconds": 120, "steps": 1})["id"]
    wait_for(lambda: controller.task(running)["status"] == "running", 15, what="sleep running")  # type: ignore[index]

    deleted = controller.api.delete("/api/v1/devices/dev-x", params={"history": "keep"})
    assert deleted.status_code == 200, deleted.text
    answer = deleted.json()
    assert answer["identity_revoked"] and answer["accounts_removed"] == ["acc-x"] and answer["tasks_canceled"] == 1
    assert answer["retained_cleared"] == ["devices/dev-x/status", "devices/dev-x/config"]
    assert controller.wait_task(running)["status"] == "canceled"

    # The security promise: the stolen (or old) login is refused, and the daemon holding it was
    # knocked off and cannot reconnect.
    wait_for(lambda: _refused(port, "dev-x", secrets["dev-x"]), 15, 0.2, "the deleted device's login refused")
    log = daemons["dev-x"].process.log_path
    wait_for(lambda: "not authori" in log.read_text().lower(), 20, 0.2, "the running daemon knocked off and refused")

    # Hidden from lists, its history kept; its retained status gone from the broker.
    listed = [d["id"] for d in controller.api.get("/api/v1/devices").json()["items"]]
    assert listed == ["dev-y"]
    assert controller.device("dev-x")["deleted_at"] is not None  # type: ignore[index]
    assert controller.task(done["id"])["status"] == "succeeded"  # type: ignore[index]
    assert controller.api.get("/api/v1/accounts/acc-x").status_code == 404
    watcher = RawClient(port, "fleet-controller", fleet.controller_secret)
    statuses: list[tuple[str, bytes]] = []
    watcher.client.on_message = lambda _c, _u, message: statuses.append((message.topic, message.payload))
    assert watcher.connected.wait(10) and watcher.refused is None
    watcher.subscribe("devices/+/status")
    wait_for(lambda: any(topic == "devices/dev-y/status" for topic, _ in statuses), 10, what="dev-y's retained status")
    assert [payload for topic, payload in statuses if topic == "devices/dev-x/status" and payload] == []
    watcher.close()

    # The id shows up again (here a new login for it, as an ad hoc birth would): ignored ...
    secrets["dev-x"] = _provision(controller, "dev-x")
    again = _daemon(fleet, tmp_path, _processes, "dev-x", secrets["dev-x"], copy="again")
    wait_for(lambda: "ignored a status of deleted device dev-x" in controller.process.output(), 15, 0.2,
             "the controller ignoring the deleted device's birth")
    assert [d["id"] for d in controller.api.get("/api/v1/devices").json()["items"]] == ["dev-y"]
    # ... until an operator restores it: then its heartbeats bring it back.
    assert controller.api.post("/api/v1/devices/dev-x/restore").status_code == 200
    controller.wait_device("dev-x", "online", timeout=20)
    again.kill()

    purged = controller.api.delete("/api/v1/devices/dev-y", params={"history": "purge"})
    assert purged.status_code == 200 and purged.json()["tasks_purged"] == 0, purged.text
    assert purged.json()["connections_purged"] >= 1
    assert controller.api.get("/api/v1/devices/dev-y/connections").json() == []
    wait_for(lambda: _refused(port, "dev-y", secrets["dev-y"]), 15, 0.2, "dev-y's login refused")
    assert controller.api.delete("/api/v1/devices/nope").status_code == 404
    bad = controller.api.delete("/api/v1/devices/dev-y", params={"history": "shred"})
    assert bad.status_code == 422
