"""Signed tasks end to end (seed 002's HMAC scheme): with a shared key the controller's tasks
run, an operator's unsigned hand-written task is refused, and one signed with `fleet task sign`
runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.harness import (
    Broker,
    Controller,
    Device,
    MqttProbe,
    Process,
    base_env,
    fleet_argv,
)

pytestmark = pytest.mark.integration

KEY = "shared-signing-key-0123456789"


def test_devices_with_a_key_run_signed_tasks_only(tmp_path: Path, _processes: list[Process]) -> None:
    broker = Broker("amqtt", tmp_path)
    _processes.append(broker.process)
    broker.start()
    controller = Controller(broker, tmp_path, task_signing_key=KEY)
    _processes.append(controller.process)
    controller.start()
    device = Device("pc-signed", broker, tmp_path, task_signing_key=KEY, keepalive="5")
    _processes.append(device.process)
    device.start()
    controller.wait_device("pc-signed", "online")

    assert controller.wait_task(controller.create_task("pc-signed", "echo", params={"message": "signed"})["id"])[
        "status"] == "succeeded"

    probe = MqttProbe(broker, "devices/pc-signed/results")
    try:
        probe.publish("devices/pc-signed/tasks", json.dumps({"id": "by-hand", "type": "append"}))
        refused = controller.wait_task("by-hand")
        assert refused["status"] == "rejected" and refused["error"]["code"] == "unsigned"
        assert device.executions("by-hand") == 0

        signed = subprocess.run(fleet_argv("task", "sign", '{"id": "by-hand-signed", "type": "echo"}'),
                                env=base_env(task_signing_key=KEY), cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert signed.returncode == 0, signed.stderr
        probe.publish("devices/pc-signed/tasks", signed.stdout.strip())
        assert controller.wait_task("by-hand-signed")["status"] == "succeeded"
        tampered = json.loads(signed.stdout)
        tampered.update(id="by-hand-tampered")
        probe.publish("devices/pc-signed/tasks", json.dumps(tampered))
        assert controller.wait_task("by-hand-tampered")["error"]["code"] == "invalid_signature"
    finally:
        probe.close()
    logs = "".join(p.log_path.read_text() for p in _processes if p.log_path.exists())
    assert KEY not in logs
