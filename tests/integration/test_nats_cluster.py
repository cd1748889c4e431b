"""Node loss on a clustered broker (issue 14): three nats-server nodes (JetStream + MQTT), a
controller on PostgreSQL and real device daemons spread over the nodes, each given the whole
node list (`FLEET_MQTT_URL` with commas). One node is SIGKILLed while `append` tasks run:

- every task ends final, none ran twice (journal executions), none is lost;
- no device is left online-but-deaf: each one is online in the controller afterwards and runs
  a new task;
- presence is right within 2 heartbeat intervals of the kill: each device that was on the
  killed node is, by then, shown offline or online in a new session (its old session, which no
  will ended, is never taken for alive longer);
- a device restarted by hand on another node (its old session still online, no will) raises
  no `takeover` alert.

Also, on the embedded broker: a device whose task subscription the broker refuses announces no birth
until the subscription is granted.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.credentials import hash_password, write_atomically
from tests.harness import Broker, Controller, Device, Process, wait_for
from tests.integration.test_chaos import all_tasks, executions, workload
from tests.logins import RawClient
from tests.nats_cluster import NatsCluster

pytestmark = pytest.mark.integration

HEARTBEAT = 2  # seconds
SWEEP = 1.0  # the controller's sweep interval (its default)
DEVICES = 6
RELINK_LIMIT = 90.0  # seconds the controller may take to reconnect after its node died


@dataclass
class ClusterFleet:
    cluster: NatsCluster
    controller: Controller
    devices: dict[str, Device]
    homes: dict[str, int]  # device id → the node it starts on


@pytest.fixture
def cluster(tmp_path: Path, _processes: list[Process]) -> NatsCluster:
    instance = NatsCluster(tmp_path)
    _processes.extend(instance.processes)
    instance.start()
    return instance


def device_settings(url: str) -> dict[str, str]:
    return dict(mqtt_url=url, keepalive="5", heartbeat_interval=str(HEARTBEAT), max_concurrency="3",
                reconnect_min_delay="0.2", reconnect_max_delay="2")


@pytest.fixture
def fleet(cluster: NatsCluster, tmp_path: Path, postgres_url: str, _processes: list[Process]) -> ClusterFleet:
    """The controller starts at node 1; device i at node i % 3."""
    controller = Controller(cluster, tmp_path, database_url=postgres_url, mqtt_url=cluster.url_from(1), keepalive="5",
                            task_timeout_grace="3", reconnect_min_delay="0.2", reconnect_max_delay="2")
    _processes.append(controller.process)
    controller.start()
    devices, homes = {}, {}
    for index in range(DEVICES):
        device_id = f"nc-{index}"
        homes[device_id] = index % cluster.size
        devices[device_id] = Device(device_id, cluster, tmp_path, **device_settings(cluster.url_from(index % cluster.size)))
        _processes.append(devices[device_id].process)
        devices[device_id].start()
    for device_id in devices:
        controller.wait_device(device_id, "online", timeout=60)
    return ClusterFleet(cluster, controller, devices, homes)


def submit(fleet: ClusterFleet, count: int, seconds: float) -> list[str]:
    ids = []
    for index in range(count):
        task_type, params = workload(index, seconds)
        device_id = f"nc-{(index // 3) % DEVICES}"
        ids.append(fleet.controller.create_task(device_id, task_type, params=params, retry_backoff=0.2)["id"])
    return ids


def controller_hears(controller: Controller) -> bool:
    try:
        return controller.api.get("/healthz").json().get("mqtt_connected") is True
    except httpx.HTTPError:
        return False


def presence_right_within(fleet: ClusterFleet, victims: dict[str, str], killed_at: float, limit: float) -> dict[str, str]:
    """Poll until every device in `victims` (id → its session on the killed node) is shown offline
    or online in another session; how each ended, and fail if that took longer than `limit`.

    The clock starts at the kill, or, when the killed node was the controller's own, once the
    controller is connected (and subscribed) again: while it hears nothing it cannot know who
    went away, and its /healthz says so (`mqtt_connected: false`)."""
    how: dict[str, str] = {}
    since = killed_at
    while len(how) < len(victims):
        if not controller_hears(fleet.controller):
            since = time.monotonic()
            assert since - killed_at <= RELINK_LIMIT, f"the controller did not reconnect within {RELINK_LIMIT} s"
        for device_id, old_session in victims.items():
            if device_id in how:
                continue
            device = fleet.controller.device(device_id) or {}
            if device.get("status") == "offline":
                how[device_id] = f"offline after {time.monotonic() - killed_at:.1f} s"
            elif device.get("session_id") not in (None, old_session):
                how[device_id] = f"online in a new session after {time.monotonic() - killed_at:.1f} s"
        if len(how) == len(victims):
            break
        if since > killed_at:
            how_late = f"{time.monotonic() - since:.1f} s after the controller was connected again"
        else:
            how_late = f"{time.monotonic() - killed_at:.1f} s after the kill"
        assert time.monotonic() - since <= limit, (
            f"devices still shown online in their dead node's session {how_late}: "
            f"{sorted(set(victims) - set(how))} (settled: {how})")
        time.sleep(0.1)
    return how


def settle(controller: Controller, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = all_tasks(controller)
        open_ = [i for i in ids if i not in tasks or tasks[i]["status"] not in ("succeeded", "failed", "canceled",
                                                                              "expired", "timed_out")]
        if not open_ or time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


@pytest.mark.serial  # presence right within 2 heartbeats + a sweep + 2 s: run alone (tests/run.sh)
@pytest.mark.parametrize("killed", [0, 1], ids=["devices-node", "controller-node"])
def test_node_killed_mid_run(fleet: ClusterFleet, killed: int) -> None:
    controller = fleet.controller
    ids = submit(fleet, 60, seconds=1.0)
    wait_for(lambda: any(t["status"] == "running" for t in all_tasks(controller).values()), 30, 0.05, "tasks running")
    victims = {d: (controller.device(d) or {})["session_id"] for d, home in fleet.homes.items() if home == killed}
    fleet.cluster.kill(killed)
    killed_at = time.monotonic()
    # 2 heartbeat intervals, plus one sweep and 2 s for the API polls on a busy machine (CI saw
    # 6.0 s, at a limit of 6 s, with 1 s).
    how = presence_right_within(fleet, victims, killed_at, 2 * HEARTBEAT + SWEEP + 2.0)

    tasks = settle(controller, ids, timeout=180)
    runs: Counter[str] = Counter()
    for device in fleet.devices.values():
        runs += executions(device)
    final = [i for i in ids if tasks.get(i, {}).get("status") in ("succeeded", "failed", "canceled", "expired", "timed_out")]
    succeeded = [i for i in ids if tasks.get(i, {}).get("status") == "succeeded"]
    twice = [key for key, count in runs.items() if count > 1]
    print(f"\n[nats x3] node n{killed} SIGKILL mid-run: {len(ids)} tasks sent, {len(final)} final, "
          f"{len(succeeded)} succeeded, {len(twice)} ran twice, {len(ids) - len(final)} lost; presence: {how}")
    assert not twice, f"run keys executed more than once: {twice[:10]}"
    assert len(final) == len(ids), f"{len(ids) - len(final)} task(s) never finished"
    assert len(succeeded) == len(ids), {i: tasks[i]["status"] for i in ids if i not in succeeded}

    # Nobody online-but-deaf: every device is online and runs a task sent now.
    for device_id in fleet.devices:
        controller.wait_device(device_id, "online", timeout=60)
    probes = {device_id: controller.create_task(device_id, "echo", params={"message": "after"})["id"]
              for device_id in fleet.devices}
    for device_id, task_id in probes.items():
        assert controller.wait_task(task_id, timeout=60)["status"] == "succeeded", device_id
    alerts = {d: (controller.device(d) or {}).get("presence_alert") for d in fleet.devices}
    assert not any(alerts.values()), alerts


def test_device_restarted_on_another_node_raises_no_takeover_alert(
    cluster: NatsCluster, tmp_path: Path, _processes: list[Process]
) -> None:
    """The operator moves a device whose node died to another node by hand (a new daemon, so a
    new boot id): its old session was never ended by a will, yet this is no second PC.
    Heartbeats every 30 s (the default) keep the old session online until the new birth, as
    in the issue's measurement, so the birth meets a session the controller takes for alive."""
    controller = Controller(cluster, tmp_path, mqtt_url=cluster.url_from(1), keepalive="5")
    _processes.append(controller.process)
    controller.start()
    slow = {"heartbeat_interval": "30"}
    first = Device("moved", cluster, tmp_path, **{**device_settings(cluster.nodes[0].mqtt_url), **slow})
    _processes.append(first.process)
    first.start()
    old = controller.wait_device("moved", "online", timeout=60)
    cluster.kill(0)
    first.kill()
    moved = Device("moved", cluster, tmp_path, **{**device_settings(cluster.nodes[2].mqtt_url), **slow})  # same dir
    _processes.append(moved.process)
    moved.start()
    new = wait_for(lambda: (d := controller.device("moved")) and d["status"] == "online"
                   and d["session_id"].split("-")[0] != old["session_id"].split("-")[0] and d, 60, 0.2,
                   "the restarted daemon's birth")
    assert new["presence_alert"] is None, new["presence_alert"]
    history = controller.api.get("/api/v1/devices/moved/connections").json()
    ended = next(entry for entry in history if entry["session_id"] == old["session_id"] and entry["state"] == "offline")
    assert ended["reason"].startswith("superseded by session")


def test_no_birth_while_the_task_subscription_is_refused(tmp_path: Path, _processes: list[Process]) -> None:
    """The embedded broker's ACL denies the device's task topic at first: SUBACK 0x80 (Mosquitto
    2.0 grants a denied subscription and drops its messages instead, so it cannot show this).
    The daemon stays unannounced (no birth, no heartbeat) until the ACL allows the topic (the
    broker re-reads the file when it changes) and a retry is granted."""
    files = tmp_path / "broker-files"
    files.mkdir()
    passwd, acl = files / "passwd", files / "acl"
    passwd.write_text(f"deaf-1:{hash_password('pw-deaf')}\nwatch:{hash_password('pw-watch')}\n")
    rules = ["user watch", "topic readwrite devices/#", "user deaf-1", "topic readwrite devices/deaf-1/status",
             "topic readwrite devices/deaf-1/results", "topic readwrite devices/deaf-1/heartbeat",
             "topic read devices/deaf-1/config", "topic write devices/deaf-1/config/reported",
             "topic read fleet/broadcast/tasks"]  # a device's rights (broker/credentials.py) but its task topic
    write_atomically(acl, "\n".join(rules) + "\n")
    broker = Broker("amqtt", tmp_path, password_file=passwd, acl_file=acl)
    _processes.append(broker.process)
    broker.start()
    watcher = RawClient(broker.port, "watch", "pw-watch")
    try:
        assert watcher.connected.wait(10) and watcher.refused is None
        watcher.subscribe("devices/deaf-1/status", "devices/deaf-1/heartbeat")
        device = Device("deaf-1", broker, tmp_path, mqtt_url=f"mqtt://deaf-1:pw-deaf@127.0.0.1:{broker.port}",
                        keepalive="5", heartbeat_interval="1", reconnect_min_delay="0.5", reconnect_max_delay="1")
        _processes.append(device.process)
        device.start()
        wait_for(lambda: "refused subscriptions to devices/deaf-1/tasks" in device.process.output(), 20, 0.1,
                 "the daemon noticing the refused subscription")
        time.sleep(3)  # an absence takes a quiet period to show: 3 heartbeat intervals, a few retries
        assert watcher.received == [], watcher.received
        assert device.process.output().count("refused subscriptions") == 1  # logged once per episode

        write_atomically(acl, "\n".join([*rules, "topic read devices/deaf-1/tasks"]) + "\n")
        wait_for(lambda: "devices/deaf-1/status" in watcher.received, 30, 0.1, "the birth once the subscription is granted")
        wait_for(lambda: "devices/deaf-1/heartbeat" in watcher.received, 10, 0.1, "heartbeats after the birth")
        assert watcher.received[0] == "devices/deaf-1/status"
        assert "granted every subscription after" in device.process.output()
    finally:
        watcher.close()
