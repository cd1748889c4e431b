"""Presence under faults that flap (issue 3), on real processes and both brokers: two daemons
started with one device id are reported by the controller and by the daemons, and stop
dropping each other instead of looping."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import Broker, Controller, Device, Process, wait_for


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

    # Mosquitto drops the older of two clients with one id, so the daemons take turns until they
    # notice; amqtt lets both stay connected, and the second birth is a takeover.
    alert = "duplicate_id" if broker.kind == "mosquitto" else "takeover"
    device = wait_for(
        lambda: (d := controller.device("twin")) and (d["presence_alert"] or "").startswith(alert) and d,
        45, 0.2, f"the controller's {alert} alert",
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
