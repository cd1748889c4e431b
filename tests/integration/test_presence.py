"""Presence under faults, on real processes and both brokers: two daemons started with one
device id are reported by the controller and by the daemons, and stop dropping each other
instead of looping; a device whose network vanishes, or that sleeps, is taken for offline
after two heartbeat intervals without one even where the broker never publishes its will."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.harness import (
    Broker,
    Controller,
    Device,
    Process,
    base_env,
    fleet_argv,
    wait_for,
)

pytestmark = pytest.mark.integration


def births(controller: Controller, device_id: str) -> int:
    history = controller.api.get(f"/api/v1/devices/{device_id}/connections").json()
    return sum(1 for entry in history if entry["state"] == "online")


def test_two_daemons_with_one_id_are_reported_and_stop_fighting(
    broker: Broker, controller: Controller, tmp_path: Path, _processes: list[Process]
) -> None:
    twins = [Device("twin", broker, tmp_path, copy=name, keepalive="5", reconnect_max_delay="1") for name in "ab"]
    for twin in twins:
        _processes.append(twin.process)
        twin.start()

    # Both brokers drop the older of two clients with one id [MQTT-3.1.4-2], so the daemons take
    # turns until they notice.
    device = wait_for(
        lambda: (d := controller.device("twin")) and (d["presence_alert"] or "").startswith("duplicate_id") and d,
        45, 0.2, "the controller's duplicate_id alert",
    )
    assert "FLEET_DEVICE_ID" in device["presence_alert"]

    def reported() -> bool:
        logs = [twin.process.log_path.read_text() for twin in twins]
        return any("is also used by another daemon" in text or "has not gone offline" in text for text in logs)

    wait_for(reported, 45, 0.2, "a daemon reporting the shared device id")
    settled = births(controller, "twin")
    time.sleep(4)  # proving that the fight stopped needs a quiet period
    assert births(controller, "twin") - settled <= 1, "the daemons kept dropping each other"
    assert controller.device("twin")["status"] == "online"  # type: ignore[index]
    assert all(twin.process.running for twin in twins)


@pytest.mark.serial  # offline within 6.5 s of the cut, 4–5.8 s of silence: run alone (tests/run.sh)
def test_a_device_whose_network_vanishes_is_offline_after_two_silent_heartbeat_intervals(
    broker: Broker, controller: Controller, tmp_path: Path, _processes: list[Process]
) -> None:
    """The device's keepalive is long (60 s), so neither it nor the broker notices the cut in
    time (amqtt never would): only the missing heartbeats tell the controller."""
    from tests.netproxy import TcpProxy

    proxy = TcpProxy(broker.port)
    proxy.start()
    try:
        device = Device("hb-1", broker, tmp_path, mqtt_url=proxy.url, keepalive="60", heartbeat_interval="2")
        _processes.append(device.process)
        device.start()
        online = controller.wait_device("hb-1", "online")
        wait_for(lambda: (d := controller.device("hb-1")) and d["last_heartbeat"], 10, 0.1, "a first heartbeat")

        proxy.cut()
        cut_at = time.monotonic()
        offline = controller.wait_device("hb-1", "offline", timeout=12)
        assert time.monotonic() - cut_at <= 2 * 2 + 1 + 1.5  # 2 intervals, the 1 s sweep, slack for a busy machine
        latest = controller.api.get("/api/v1/devices/hb-1/connections").json()[0]
        assert (latest["state"], latest["session_id"]) == ("offline", online["session_id"])
        assert latest["reason"] == "silent: no heartbeat for 4 s"
        # Measured on the controller's own clock, from the last heartbeat it heard: 2 intervals of
        # 2 s plus at most one sweep (1 s); a third missed heartbeat would make it 6 s or more.
        silent_for = (datetime.fromisoformat(latest["at"]) - datetime.fromisoformat(offline["last_heartbeat"]))
        assert 4.0 <= silent_for.total_seconds() <= 5.8, silent_for

        proxy.restore()  # the device reconnects with a new session
        back = controller.wait_device("hb-1", "online", timeout=15)
        assert back["session_id"] != online["session_id"]
    finally:
        proxy.close()


def test_a_sleeping_device_is_offline_and_back_online_when_it_wakes(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    """SIGSTOP is a PC that went to sleep: its connection stays open, its heartbeats stop."""
    device = start_device("hb-2", keepalive="60", heartbeat_interval="1")
    online = controller.wait_device("hb-2", "online")
    assert device.process.popen is not None
    device.process.popen.send_signal(signal.SIGSTOP)
    try:
        controller.wait_device("hb-2", "offline", timeout=8)
    finally:
        device.process.popen.send_signal(signal.SIGCONT)
    awake = controller.wait_device("hb-2", "online", timeout=8)
    assert awake["session_id"] == online["session_id"]  # the same connection, never dropped
    latest = controller.api.get("/api/v1/devices/hb-2/connections").json()[0]
    assert latest["reason"] == "heartbeats resumed"


def test_heartbeats_carry_the_pcs_load_to_rest_and_the_cli(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    """Each heartbeat carries CPU, memory and free disk (as seed 003's workers report them); the
    controller keeps the latest with its time, and `fleet devices` shows it."""
    device = start_device("hb-3", heartbeat_interval="1")
    first = wait_for(lambda: (d := controller.device("hb-3")) and d["metrics"] and d, 10, 0.2, "a heartbeat with metrics")
    metrics = first["metrics"]
    assert 0 <= metrics["cpu_percent"] <= 100
    assert abs(metrics["memory_percent"] - psutil.virtual_memory().percent) < 10
    free_here = shutil.disk_usage(device.data_dir).free
    assert abs(metrics["disk_free_bytes"] - free_here) < max(0.05 * free_here, 2**30)  # the data dir's filesystem
    later = wait_for(
        lambda: (d := controller.device("hb-3")) and d["last_heartbeat"] != first["last_heartbeat"] and d,
        5, 0.2, "the next heartbeat",
    )
    assert later["last_heartbeat"] > first["last_heartbeat"]

    env = {**base_env(api_url=str(controller.api.base_url), api_token=controller.admin_token), "COLUMNS": "200"}
    listed = subprocess.run(fleet_argv("devices"), env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "hb-3" in line)
    assert re.search(r"cpu \d+% mem \d+% disk [\d.]+ GB free", row), row
