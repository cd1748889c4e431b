"""Groups managed on the controller and fleet config (issue 16), on a locked broker (Mosquitto and
the embedded broker, with password and ACL files the controller writes), real controller and
real device daemons, one fleet per broker for the module.

- The measured failure, reproduced: a device *declaring* group `eu` (FLEET_GROUPS) whose broker
  identity lacks `eu` was counted as a member and its broker refused the subscription. Now it is
  shown as declared-not-accepted, is no member, and gets no group run.
- A group set by REST reaches the broker ACL and the device: it runs a group broadcast after
  being added, and no longer after being removed, without a restart.
- Desired config reaches a device that was offline when it was set (retained), and a setting the
  device does not accept (its FLEET_REMOTE_CONFIG_ALLOW) is shown as drift with its reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Controller, Device, Process, SimulatorThread, base_env, fleet_argv, wait_for
from tests.logins import LockedFleet, RawClient

pytestmark = pytest.mark.integration


class Fleet:
    def __init__(self, locked: LockedFleet, devices: dict[str, Device]) -> None:
        self.locked, self.devices = locked, devices
        self.controller: Controller = locked.controller


@pytest.fixture(scope="module", params=["mosquitto", "amqtt"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp(f"groups-{request.param}")
    processes: list[Process] = []
    try:
        locked = LockedFleet(request.param, work, processes)
        controller = locked.controller
        devices: dict[str, Device] = {}
        declared = {"dev-eu": {"groups": ["eu"]}, "dev-m": {}, "dev-c": {"remote_config_allow": ["heartbeat_interval", "log_level"]}}
        for name, settings in declared.items():
            made = controller.api.post("/api/v1/identities", json={"name": name, "role": "device"})
            assert made.status_code == 201, made.text
            url = f"mqtt://{name}:{made.json()['secret']}@127.0.0.1:{locked.broker.port}"
            devices[name] = Device(name, locked.broker, work, mqtt_url=url, keepalive="5", **settings)
            processes.append(devices[name].process)
            devices[name].start()
        for name in devices:
            controller.wait_device(name, "online")
        yield Fleet(locked, devices)
    finally:
        for process in processes:
            process.kill()


def config_of(controller: Controller, device_id: str) -> dict[str, Any]:
    response = controller.api.get(f"/api/v1/devices/{device_id}/config")
    assert response.status_code == 200, response.text
    return response.json()


def wait_reported_groups(controller: Controller, device_id: str, groups: list[str]) -> dict[str, Any]:
    def reported() -> dict[str, Any] | None:
        view = config_of(controller, device_id)
        mine = view["reported"]
        return view if mine and mine["revision"] == view["revision"] and mine["groups"] == groups else None

    return wait_for(reported, 15, what=f"{device_id} reporting groups {groups}")


def fleet_cli(controller: Controller, *args: str) -> str:
    """`fleet …` against this controller, as an operator runs it."""
    env = base_env(api_url=f"http://127.0.0.1:{controller.port}", api_token=controller.admin_token)
    done = subprocess.run(fleet_argv(*args), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def not_run(fleet: Fleet, device_id: str, group_task_id: str) -> None:
    """A marker task sent after the group task has run on the device: the group task, which was
    published before it, did not run there."""
    controller = fleet.controller
    marker = controller.wait_task(controller.create_task(device_id, "ping")["id"])
    assert marker["status"] == "succeeded"
    assert fleet.devices[device_id].executions(f"{group_task_id}:{device_id}") == 0


def test_a_declared_group_is_no_membership(fleet: Fleet) -> None:
    controller, locked = fleet.controller, fleet.locked
    assert "not members (not counted): eu" in fleet_cli(controller, "device", "groups", "dev-eu")
    shown = controller.api.get("/api/v1/devices/dev-eu/groups").json()
    assert shown == {"device_id": "dev-eu", "groups": [], "declared": ["eu"], "declared_not_accepted": ["eu"],
                     "broker": None}
    assert controller.api.get("/api/v1/devices", params={"group": "eu"}).json()["total"] == 0
    response = controller.api.post("/api/v1/broadcasts", json={"type": "ping", "group": "eu"})
    assert response.status_code != 201 or response.json()["task_ids"] == [], response.text
    operator = RawClient(locked.broker.port, "ops", locked.operator_secret)
    try:
        assert operator.connected.wait(10) and operator.refused is None
        operator.publish("fleet/groups/eu/tasks", {"id": "eu-declared", "type": "echo", "params": {"message": "x"}})
    finally:
        operator.close()
    not_run(fleet, "dev-eu", "eu-declared")
    assert controller.task("eu-declared:dev-eu") is None


def test_a_group_set_by_rest_reaches_the_broker_acl_and_the_device(fleet: Fleet) -> None:
    controller, locked = fleet.controller, fleet.locked
    response = controller.api.put("/api/v1/devices/dev-m/groups", json={"groups": ["eu"]})
    assert response.status_code == 200, response.text
    assert response.json()["groups"] == ["eu"] and response.json()["broker"]
    acl = Path(locked.broker.acl_file).read_text()  # type: ignore[arg-type]
    assert "topic read fleet/groups/eu/tasks" in acl.split("user dev-m", 1)[1].split("\n\n", 1)[0]
    wait_reported_groups(controller, "dev-m", ["eu"])

    broadcast = controller.api.post("/api/v1/broadcasts", json={"type": "echo", "group": "eu", "params": {"message": "eu"}})
    assert broadcast.status_code == 201, broadcast.text
    assert broadcast.json()["task_ids"] == [f"{broadcast.json()['id']}:dev-m"]
    assert controller.wait_task(broadcast.json()["task_ids"][0])["status"] == "succeeded"

    assert "dev-m: groups none" in fleet_cli(controller, "device", "groups", "dev-m", "--remove", "eu")
    wait_reported_groups(controller, "dev-m", [])
    operator = RawClient(locked.broker.port, "ops", locked.operator_secret)
    try:
        assert operator.connected.wait(10) and operator.refused is None
        operator.publish("fleet/groups/eu/tasks", {"id": "eu-after", "type": "echo", "params": {"message": "x"}})
    finally:
        operator.close()
    not_run(fleet, "dev-m", "eu-after")
    bad = controller.api.put("/api/v1/devices/dev-m/groups", json={"groups": ["no spaces"]})
    assert bad.status_code == 422 and "groups" in bad.text


def test_desired_config_reaches_an_offline_device_and_drift_is_shown(fleet: Fleet) -> None:
    controller, device = fleet.controller, fleet.devices["dev-c"]
    refused = controller.api.put("/api/v1/config", json={"settings": {"poll_everything": True}})
    assert refused.status_code == 422 and "heartbeat_interval" in refused.json()["detail"], refused.text
    device.kill()
    controller.wait_device("dev-c", "offline")

    assert "global config: log_level=DEBUG" in fleet_cli(controller, "config", "set", "log_level=DEBUG")
    own = fleet_cli(controller, "config", "set", "--device", "dev-c", "heartbeat_interval=2", "max_concurrency=3")
    assert "device dev-c config: heartbeat_interval=2, max_concurrency=3" in own
    device.start()
    controller.wait_device("dev-c", "online")

    def reported() -> dict[str, Any] | None:
        view = config_of(controller, "dev-c")
        mine = view["reported"]
        return view if mine and mine["revision"] == view["revision"] else None

    view = wait_for(reported, 15, what="dev-c reporting the desired revision")
    assert view["desired"] == {"log_level": "DEBUG", "heartbeat_interval": 2, "max_concurrency": 3}
    assert view["sources"] == {"log_level": "global", "heartbeat_interval": "device", "max_concurrency": "device"}
    assert view["reported"]["applied"] == {"log_level": "DEBUG", "heartbeat_interval": 2}
    assert [(d["setting"], d["desired"]) for d in view["drift"]] == [("max_concurrency", 3)]
    assert "FLEET_REMOTE_CONFIG_ALLOW" in view["drift"][0]["reason"] and not view["in_sync"]
    drifting = {v["device_id"] for v in controller.api.get("/api/v1/config/drift").json()}
    assert "dev-c" in drifting
    assert "dev-c max_concurrency: desired 3, reported null" in fleet_cli(controller, "config", "drift")
    # The interval it applied is the one its silence is judged by.
    assert wait_for(lambda: controller.device("dev-c")["heartbeat_interval"] == 2, 10, what="interval 2")  # type: ignore[index]

    fixed = controller.api.put("/api/v1/devices/dev-c/config", json={"settings": {"heartbeat_interval": 2}})
    assert fixed.status_code == 200, fixed.text
    wait_for(lambda: config_of(controller, "dev-c")["in_sync"], 15, what="dev-c in sync")
    assert "dev-c" not in {v["device_id"] for v in controller.api.get("/api/v1/config/drift").json()}
    assert controller.api.put("/api/v1/config", json={"settings": {}}).status_code == 200


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_simulated_devices_follow_groups_and_config(controller: Controller) -> None:
    """`fleet simulate`'s devices speak the same contract: they subscribe to the groups their
    desired config names, apply a heartbeat interval and report the rest rejected."""
    sim = SimulatorThread(controller.broker.url, 2, prefix="simg", heartbeat=5.0, seed=3)
    try:
        sim.call(sim.fleet.start())
        assert sim.call(sim.fleet.wait_online(30)), sim.fleet.counters.snapshot()
        for device_id in ("simg-0000", "simg-0001"):
            controller.wait_device(device_id, "online")
        assert controller.api.put("/api/v1/devices/simg-0001/groups", json={"groups": ["eu"]}).status_code == 200
        wait_reported_groups(controller, "simg-0001", ["eu"])
        broadcast = controller.api.post("/api/v1/broadcasts", json={"type": "echo", "group": "eu", "params": {"message": "s"}})
        assert broadcast.status_code == 201 and broadcast.json()["task_ids"] == [f"{broadcast.json()['id']}:simg-0001"]
        assert controller.wait_task(broadcast.json()["task_ids"][0])["status"] == "succeeded"

        own = controller.api.put("/api/v1/devices/simg-0000/config",
                                 json={"settings": {"heartbeat_interval": 3, "max_concurrency": 2}})
        assert own.status_code == 200, own.text

        def reported() -> dict[str, Any] | None:
            view = config_of(controller, "simg-0000")
            return view if view["reported"] and view["reported"]["revision"] == view["revision"] else None

        view = wait_for(reported, 15, what="simg-0000 reporting its config")
        assert view["reported"]["applied"] == {"heartbeat_interval": 3}
        assert [d["setting"] for d in view["drift"]] == ["max_concurrency"]
    finally:
        sim.close()
